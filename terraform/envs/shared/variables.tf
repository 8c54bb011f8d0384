variable "region" {
  type        = string
  description = "AWS region (e.g. eu-central-1)."
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones of the region to spread over."
}

variable "name" {
  type        = string
  description = "Prefix of every resource and the EKS cluster's name."
}

variable "bucket_prefix" {
  type        = string
  description = "Globally unique prefix of the bucket names (your organisation's, e.g. acme-radassist)."
}

variable "vpc_cidr" {
  type        = string
  description = "The VPC's IPv4 range."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version."
  default     = "1.31"
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "Ranges that may reach the Kubernetes API's public endpoint (empty: private endpoint only)."
  default     = []
}

variable "owner" {
  type        = string
  description = "Team that owns the environment (a tag on every resource)."
}
