variable "name" {
  type        = string
  description = "Prefix of the roles' names."
}

variable "oidc_provider_arn" {
  type        = string
  description = "The cluster's IRSA OIDC provider."
}

variable "oidc_issuer" {
  type        = string
  description = "The cluster's OIDC issuer without https://."
}

variable "roles" {
  type = map(object({
    namespace       = string
    service_account = string
    statements = list(object({
      actions   = list(string)
      resources = list(string)
    }))
  }))
  description = "One role per Kubernetes service account: the namespace and name that may assume it and what it may do, on named resources only."
}

variable "tags" {
  type        = map(string)
  description = "Tags on every role."
  default     = {}
}
