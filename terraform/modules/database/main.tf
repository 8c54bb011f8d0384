# The portal's PostgreSQL: encrypted with KMS, TLS required, automated backups, IAM authentication on, logs
# exported to CloudWatch, enhanced monitoring; the master password is generated and kept by RDS in Secrets Manager
# (never in terraform's variables or outputs). Only the cluster's nodes may connect; NetworkPolicies narrow that to
# the portal's pods.

resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

module "security_group" {
  source                    = "../service_security_group"
  name                      = "${var.name}-postgres"
  service                   = "PostgreSQL"
  vpc_id                    = var.vpc_id
  port                      = 5432
  client_security_group_ids = var.client_security_group_ids
  tags                      = var.tags
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres"
  family = "postgres${split(".", var.engine_version)[0]}"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000" # statements over a second
  }
  tags = var.tags
}

resource "aws_cloudwatch_log_group" "postgres" {
  # checkov:skip=CKV_AWS_338: retention is the environment's variable: envs/prod keeps 365 days, envs/dev 30 (no patient traffic)
  name              = "/aws/rds/instance/${var.name}/postgresql" # the name RDS exports to
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

module "monitoring_role" {
  source           = "../service_role"
  name             = "${var.name}-rds-monitoring"
  service          = "monitoring.rds.amazonaws.com"
  managed_policies = ["service-role/AmazonRDSEnhancedMonitoringRole"]
  tags             = var.tags
}

resource "aws_db_instance" "this" {
  # checkov:skip=CKV_AWS_157: Multi-AZ is the environment's variable: envs/prod sets multi_az = true; envs/dev runs one instance of test data
  # checkov:skip=CKV_AWS_293: deletion protection is the environment's variable: envs/prod sets deletion_protection = true (and a final snapshot); envs/dev can be torn down
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  db_name        = var.database_name
  username       = "radassist"

  manage_master_user_password   = true # RDS generates it and keeps it in Secrets Manager
  master_user_secret_kms_key_id = var.kms_key_arn

  allocated_storage     = var.allocated_storage_gib
  max_allocated_storage = var.max_allocated_storage_gib
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [module.security_group.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  backup_retention_period   = var.backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = !var.deletion_protection
  final_snapshot_identifier = "${var.name}-final"

  iam_database_authentication_enabled   = true
  auto_minor_version_upgrade            = true
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = module.monitoring_role.arn

  tags       = var.tags
  depends_on = [aws_cloudwatch_log_group.postgres]
}
