variable "name" {
  type        = string
  description = "Environment prefix of every resource (e.g. radassist-prod); also the EKS cluster's name."
}

variable "bucket_prefix" {
  type        = string
  description = "Globally unique prefix of the bucket names (e.g. acme-radassist-prod)."
}

variable "vpc_cidr" {
  type        = string
  description = "The VPC's IPv4 range (a /16 or /18)."
}

variable "availability_zones" {
  type        = list(string)
  description = "Two or three availability zones."
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway (dev) or one per zone (prod)."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version."
}

variable "endpoint_public_access" {
  type        = bool
  description = "Whether the API server has a public endpoint (limited to public_access_cidrs)."
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "Ranges allowed to the public API endpoint."
  default     = []
}

variable "cpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_gib       = number
  })
  description = "The CPU node group."
}

variable "gpu_nodes" {
  type = object({
    enabled        = bool
    instance_types = list(string)
    max_size       = number
    disk_gib       = number
  })
  description = "The optional GPU node group (the full training recipe)."
}

variable "database" {
  type = object({
    engine_version            = string
    instance_class            = string
    allocated_storage_gib     = number
    max_allocated_storage_gib = number
    multi_az                  = bool
    backup_retention_days     = number
    deletion_protection       = bool
  })
  description = "The portal's RDS PostgreSQL."
}

variable "redis" {
  type = object({
    node_type               = string
    replicas                = number
    snapshot_retention_days = number
  })
  description = "The job queue's ElastiCache Redis."
}

variable "log_retention_days" {
  type        = number
  description = "Days CloudWatch keeps control-plane, database and flow logs."
}

variable "prediction_log_days" {
  type        = number
  description = "Days the model server's prediction logs are kept (monitoring reads windows of them)."
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days overwritten or deleted objects' old versions are kept."
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let terraform delete non-empty buckets (dev only)."
}

variable "namespaces" {
  type = object({
    portal   = string
    serving  = string
    pipeline = string
  })
  description = "Kubernetes namespaces of the portal, the model servers and the Kubeflow pipelines (the IRSA trusts name them)."
  default     = { portal = "radassist", serving = "radassist", pipeline = "kubeflow" }
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = {}
}
