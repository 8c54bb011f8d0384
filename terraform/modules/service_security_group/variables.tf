variable "name" {
  type        = string
  description = "The security group's name."
}

variable "service" {
  type        = string
  description = "What listens behind it (PostgreSQL, Redis): named in the group's and its rule's descriptions."
}

variable "vpc_id" {
  type        = string
  description = "The VPC the group belongs to."
}

variable "port" {
  type        = number
  description = "The one TCP port the clients may reach."
}

variable "client_security_group_ids" {
  type        = list(string)
  description = "Security groups whose members may connect (the EKS cluster's)."
}

variable "tags" {
  type        = map(string)
  description = "Tags on the group."
  default     = {}
}
