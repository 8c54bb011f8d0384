# Redis for the portal's job queue and shared rate-limit counters: TLS in transit, KMS at rest, an auth token that
# terraform generates into Secrets Manager (the cluster's External Secrets or the deploy guide's command reads it
# from there: outputs carry the secret's ARN only), automatic failover when there is a replica.

resource "random_password" "auth" {
  length  = 48
  special = false # ElastiCache refuses some punctuation in tokens
}

resource "aws_secretsmanager_secret" "auth" {
  # checkov:skip=CKV2_AWS_57: ElastiCache auth tokens are rotated with a planned token update (AUTH token rotation with the SET strategy), not a Lambda rotation
  name                    = "${var.name}/redis-auth-token"
  description             = "AUTH token of ${var.name}'s Redis"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = random_password.auth.result
}

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

module "security_group" {
  source                    = "../service_security_group"
  name                      = "${var.name}-redis"
  service                   = "Redis (TLS)"
  vpc_id                    = var.vpc_id
  port                      = 6379
  client_security_group_ids = var.client_security_group_ids
  tags                      = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  # checkov:skip=CKV2_AWS_50: automatic failover needs a replica: envs/prod has one (replicas = 1, failover and Multi-AZ on); envs/dev runs one node, and the portal's jobs table, not Redis, is the queue's truth (a lost node loses no job)
  replication_group_id       = var.name
  description                = "RadAssist job queue and rate-limit counters"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  num_cache_clusters         = 1 + var.replicas
  automatic_failover_enabled = var.replicas > 0
  multi_az_enabled           = var.replicas > 0
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [module.security_group.id]

  transit_encryption_enabled = true
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  auth_token                 = random_password.auth.result

  snapshot_retention_limit   = var.snapshot_retention_days
  snapshot_window            = "01:00-02:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = var.tags
}
