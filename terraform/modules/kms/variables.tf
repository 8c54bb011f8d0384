variable "name" {
  type        = string
  description = "Prefix of the keys' aliases (e.g. radassist-prod)."
}

variable "purposes" {
  type        = list(string)
  description = "One customer-managed key per purpose: what each encrypts (s3, rds, eks, logs, ecr, elasticache, secrets)."
}

variable "deletion_window_days" {
  type        = number
  description = "Days a deleted key can still be recovered (7-30)."
  default     = 30
}

variable "tags" {
  type        = map(string)
  description = "Tags on every key."
  default     = {}
}
