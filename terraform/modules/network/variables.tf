variable "name" {
  type        = string
  description = "Prefix of every resource name (e.g. radassist-prod)."
}

variable "cidr_block" {
  type        = string
  description = "The VPC's IPv4 range; split into one public and one private /20 per availability zone."
}

variable "availability_zones" {
  type        = list(string)
  description = "Two or three availability zones of the region, one public and one private subnet each."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3
    error_message = "Give two or three availability zones."
  }
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all private subnets (dev: cheaper) instead of one per availability zone (prod: no single zone takes egress down)."
}

variable "interface_endpoints" {
  type        = list(string)
  description = "AWS services reached through interface VPC endpoints from the private subnets (ECR's API and registry, STS for IRSA, CloudWatch Logs, Secrets Manager)."
  default     = ["ecr.api", "ecr.dkr", "sts", "logs", "secretsmanager"]
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days the VPC flow logs are kept in CloudWatch Logs."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key that encrypts the flow-log group."
}

variable "cluster_name" {
  type        = string
  description = "The EKS cluster's name: subnets are tagged so its load balancers find them."
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = {}
}
