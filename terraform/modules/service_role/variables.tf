variable "name" {
  type        = string
  description = "The role's name."
}

variable "service" {
  type        = string
  description = "The AWS service principal that assumes the role (eks.amazonaws.com, ec2.amazonaws.com, ...)."
}

variable "tag_session" {
  type        = bool
  description = "Whether the service may also tag its sessions (EKS asks for sts:TagSession)."
  default     = false
}

variable "managed_policies" {
  type        = list(string)
  description = "AWS-managed policies to attach, by their path under arn:<partition>:iam::aws:policy/ (e.g. AmazonEKSClusterPolicy, service-role/AmazonRDSEnhancedMonitoringRole)."
  default     = []
}

variable "has_inline_policy" {
  type        = bool
  description = "Whether the role gets inline_policy_json (a flag known when planning: the policy's JSON may not be)."
  default     = false
}

variable "inline_policy_json" {
  type        = string
  description = "The role's own inline policy (JSON), when has_inline_policy."
  default     = ""
}

variable "tags" {
  type        = map(string)
  description = "Tags on the role."
  default     = {}
}
