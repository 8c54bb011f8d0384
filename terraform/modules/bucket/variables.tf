variable "name" {
  type        = string
  description = "The bucket's globally unique name."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the default encryption; null: SSE-S3 (only the access-log bucket: S3 delivers server access logs to SSE-S3 buckets only)."
}

variable "log_access" {
  type        = bool
  description = "Whether this bucket's server access logs go to access_log_bucket (false: the access-log bucket itself)."
}

variable "access_log_bucket" {
  type        = string
  description = "Bucket that receives this bucket's server access logs, when log_access."
  default     = null
}

variable "log_source_bucket_arns" {
  type        = list(string)
  description = "For the access-log bucket: the buckets whose access logs S3 may deliver here."
  default     = []
}

variable "noncurrent_days" {
  type        = number
  description = "Days old versions of overwritten or deleted objects are kept."
}

variable "expire_days" {
  type        = number
  description = "Days after which current objects expire; 0: never."
}

variable "force_destroy" {
  type        = bool
  description = "Let terraform destroy the bucket while it holds objects (dev only)."
}

variable "tags" {
  type        = map(string)
  description = "Tags on the bucket."
  default     = {}
}
