variable "name" {
  type        = string
  description = "Prefix of every bucket name (globally unique: include the account or organisation, e.g. acme-radassist-prod)."
}

variable "buckets" {
  type = map(object({
    noncurrent_days = number
    expire_days     = number
  }))
  description = "Bucket suffix per role (data: the DVC remote; pipeline-root; models: TF Serving's base path; scans: the portal's blob store; prediction-logs) with days old versions are kept and, when above 0, days after which current objects expire (prediction logs)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of every bucket's default encryption."
}

variable "access_log_days" {
  type        = number
  description = "Days the buckets' access logs are kept."
}

variable "force_destroy" {
  type        = bool
  description = "Let terraform destroy buckets that still hold objects (dev only; never where scans live)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags on every bucket."
  default     = {}
}
