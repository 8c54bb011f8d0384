variable "name" {
  type        = string
  description = "The cluster's name."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version (e.g. 1.31)."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets of the nodes and the control plane's network interfaces."
}

variable "endpoint_public_access" {
  type        = bool
  description = "Whether the API server also answers on a public endpoint (limited to public_access_cidrs); prod: false, reach it over VPN or a bastion."
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "Address ranges allowed to the public API endpoint when it is on (an office or VPN range, never 0.0.0.0/0)."
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "The Kubernetes API is never open to the whole internet: name your office or VPN ranges."
  }
}

variable "secrets_kms_key_arn" {
  type        = string
  description = "KMS key for envelope encryption of Kubernetes secrets."
}

variable "logs_kms_key_arn" {
  type        = string
  description = "KMS key of the control plane's log group."
}

variable "ebs_kms_key_arn" {
  type        = string
  description = "KMS key of the nodes' volumes."
}

variable "log_retention_days" {
  type        = number
  description = "Days the control plane's logs are kept."
}

variable "cpu_nodes" {
  type = object({
    instance_types = list(string)
    min_size       = number
    desired_size   = number
    max_size       = number
    disk_gib       = number
  })
  description = "The CPU node group: the portal, the model servers, the pipeline's CPU recipe and the monitor."
}

variable "gpu_nodes" {
  type = object({
    enabled        = bool
    instance_types = list(string)
    max_size       = number
    disk_gib       = number
  })
  description = "An optional GPU node group for the full training recipe (scales from zero; tainted so only GPU pods land there)."
}

variable "oidc_thumbprints" {
  type        = list(string)
  description = "Thumbprints of the OIDC issuer's root CA (IRSA): the Amazon root CA's by default."
  default     = ["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"]
}

variable "tags" {
  type        = map(string)
  description = "Tags on every resource."
  default     = {}
}
