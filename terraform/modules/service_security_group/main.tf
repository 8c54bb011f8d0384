# The security group of a managed service in the private subnets (the database, Redis): its one port, from the
# named client groups only; nothing else in, and the default egress of a group with no rules: none.

resource "aws_security_group" "this" {
  # checkov:skip=CKV2_AWS_5: attached by this module's callers through its id output: modules/database's RDS instance and modules/redis's replication group
  name        = var.name
  description = "${var.service} from the EKS nodes"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  count                        = length(var.client_security_group_ids) # the ids are known only after apply
  security_group_id            = aws_security_group.this.id
  description                  = "${var.service} from the cluster"
  referenced_security_group_id = var.client_security_group_ids[count.index]
  ip_protocol                  = "tcp"
  from_port                    = var.port
  to_port                      = var.port
}
