variable "name" {
  type        = string
  description = "Replication group id (e.g. radassist-prod)."
}

variable "vpc_id" {
  type        = string
  description = "The VPC its security group belongs to."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the cache nodes."
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups allowed to connect (the EKS nodes'); NetworkPolicies narrow it to the portal's pods."
}

variable "node_type" {
  type        = string
  description = "ElastiCache node type."
}

variable "replicas" {
  type        = number
  description = "Read replicas besides the primary (1 or more gives automatic failover across zones)."
}

variable "engine_version" {
  type        = string
  description = "Redis OSS engine version."
  default     = "7.1"
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key of the data at rest and of the auth token's secret."
}

variable "snapshot_retention_days" {
  type        = number
  description = "Days of daily snapshots (the job queue survives a lost node)."
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = {}
}
