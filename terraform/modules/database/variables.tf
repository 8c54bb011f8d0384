variable "name" {
  type        = string
  description = "Identifier of the instance (e.g. radassist-prod)."
}

variable "vpc_id" {
  type        = string
  description = "The VPC its security group belongs to."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the database (two or more availability zones)."
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect (the EKS nodes'); NetworkPolicies narrow it to the portal's pods."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL major.minor version."
}

variable "instance_class" {
  type        = string
  description = "RDS instance class."
}

variable "allocated_storage_gib" {
  type        = number
  description = "Initial storage; it grows on its own up to max_allocated_storage_gib."
}

variable "max_allocated_storage_gib" {
  type        = number
  description = "Upper bound of storage autoscaling."
}

variable "multi_az" {
  type        = bool
  description = "A standby in a second availability zone (prod)."
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups (point-in-time recovery)."
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse deletion (prod: always) and take a final snapshot when it is deleted anyway."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the storage, Performance Insights and the master password's secret."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key of the exported PostgreSQL logs' group."
}

variable "log_retention_days" {
  type        = number
  description = "Days the exported PostgreSQL logs are kept."
}

variable "database_name" {
  type        = string
  description = "The portal's database."
  default     = "radassist"
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = {}
}
