variable "repositories" {
  type        = map(string)
  description = "ECR repository name per image: train (Dockerfile.train: the pipeline and our model server) and portal (Dockerfile.portal)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the images."
}

variable "keep_images" {
  type        = number
  description = "Tagged images kept per repository; older ones expire (pushed models live in S3, not here)."
  default     = 30
}

variable "tags" {
  type        = map(string)
  description = "Tags on every repository."
  default     = {}
}
