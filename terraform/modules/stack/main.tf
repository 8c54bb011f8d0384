# The whole RadAssist platform on AWS: every environment (envs/dev, envs/prod) is this module with its own sizes.
#
#   network (VPC, subnets in 2-3 zones, NAT, S3/ECR/STS endpoints, flow logs) -> EKS (CPU + optional GPU nodes,
#   IRSA) -> S3 buckets, ECR repositories, RDS PostgreSQL, ElastiCache Redis, KMS keys, log groups
#   -> one IAM role per Kubernetes service account, each limited to the buckets it needs.

data "aws_region" "current" {}

locals {
  buckets = {
    data            = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 } # the DVC remote
    pipeline-root   = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 }
    models          = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 } # TF Serving's base path
    scans           = { noncurrent_days = var.noncurrent_version_days, expire_days = 0 } # the portal's blob store
    prediction-logs = { noncurrent_days = 7, expire_days = var.prediction_log_days }
  }
  bucket = module.buckets.bucket_arns
  s3_key = module.kms.key_arns["s3"]
  # S3 action sets; every statement names its bucket or prefix.
  list  = ["s3:ListBucket", "s3:GetBucketLocation"]
  read  = ["s3:GetObject", "s3:GetObjectVersion"]
  write = ["s3:PutObject", "s3:AbortMultipartUpload"]
}

module "kms" {
  source   = "../kms"
  name     = var.name
  purposes = ["s3", "rds", "eks", "logs", "ecr", "elasticache", "ebs"]
  tags     = var.tags
}

module "network" {
  source                  = "../network"
  name                    = var.name
  cidr_block              = var.vpc_cidr
  availability_zones      = var.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  cluster_name            = var.name
  flow_log_retention_days = var.log_retention_days
  logs_kms_key_arn        = module.kms.key_arns["logs"]
  tags                    = var.tags
}

module "eks" {
  source                 = "../eks"
  name                   = var.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = module.network.private_subnet_ids
  endpoint_public_access = var.endpoint_public_access
  public_access_cidrs    = var.public_access_cidrs
  secrets_kms_key_arn    = module.kms.key_arns["eks"]
  logs_kms_key_arn       = module.kms.key_arns["logs"]
  ebs_kms_key_arn        = module.kms.key_arns["ebs"]
  log_retention_days     = var.log_retention_days
  cpu_nodes              = var.cpu_nodes
  gpu_nodes              = var.gpu_nodes
  tags                   = var.tags
}

module "ecr" {
  source       = "../ecr"
  repositories = { train = "${var.name}/radassist-train", portal = "${var.name}/radassist-portal" }
  kms_key_arn  = module.kms.key_arns["ecr"]
  tags         = var.tags
}

module "buckets" {
  source          = "../buckets"
  name            = var.bucket_prefix
  buckets         = local.buckets
  kms_key_arn     = local.s3_key
  access_log_days = var.log_retention_days
  force_destroy   = var.force_destroy_buckets
  tags            = var.tags
}

module "database" {
  source                    = "../database"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.eks.cluster_security_group_id]
  engine_version            = var.database.engine_version
  instance_class            = var.database.instance_class
  allocated_storage_gib     = var.database.allocated_storage_gib
  max_allocated_storage_gib = var.database.max_allocated_storage_gib
  multi_az                  = var.database.multi_az
  backup_retention_days     = var.database.backup_retention_days
  deletion_protection       = var.database.deletion_protection
  kms_key_arn               = module.kms.key_arns["rds"]
  logs_kms_key_arn          = module.kms.key_arns["logs"]
  log_retention_days        = var.log_retention_days
  tags                      = var.tags
}

module "redis" {
  source                    = "../redis"
  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.eks.cluster_security_group_id]
  node_type                 = var.redis.node_type
  replicas                  = var.redis.replicas
  snapshot_retention_days   = var.redis.snapshot_retention_days
  kms_key_arn               = module.kms.key_arns["elasticache"]
  tags                      = var.tags
}

module "irsa" {
  source            = "../irsa"
  name              = var.name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer
  tags              = var.tags
  roles = {
    # The portal's web pods and report workers: the scan blob store only (content-addressed: read and add).
    portal = {
      namespace       = var.namespaces.portal
      service_account = "portal"
      statements = [
        { actions = local.list, resources = [local.bucket["scans"]] },
        { actions = concat(local.read, local.write), resources = ["${local.bucket["scans"]}/*"] },
        { actions = ["kms:Decrypt", "kms:GenerateDataKey"], resources = [local.s3_key] },
      ]
    }
    # TF Serving: reads the model bucket, nothing else.
    model-server = {
      namespace       = var.namespaces.serving
      service_account = "model-server"
      statements = [
        { actions = local.list, resources = [local.bucket["models"]] },
        { actions = local.read, resources = ["${local.bucket["models"]}/*"] },
        { actions = ["kms:Decrypt"], resources = [local.s3_key] },
      ]
    }
    # Our model server (infra/serving/radassist-server): reads the models and writes its prediction logs.
    model-server-logging = {
      namespace       = var.namespaces.serving
      service_account = "model-server"
      statements = [
        { actions = local.list, resources = [local.bucket["models"]] },
        { actions = local.read, resources = ["${local.bucket["models"]}/*"] },
        { actions = local.write, resources = ["${local.bucket["prediction-logs"]}/*"] },
        { actions = ["kms:Decrypt", "kms:GenerateDataKey"], resources = [local.s3_key] },
      ]
    }
    # The training pipeline (and `radassist retrain`): reads the data, adds data versions to the DVC remote
    # (content-addressed), writes its pipeline root and pushes models.
    pipeline = {
      namespace       = var.namespaces.pipeline
      service_account = "radassist-pipeline"
      statements = [
        { actions = local.list, resources = [local.bucket["data"], local.bucket["pipeline-root"], local.bucket["models"]] },
        { actions = local.read, resources = ["${local.bucket["data"]}/*", "${local.bucket["models"]}/*"] },
        { actions = local.write, resources = ["${local.bucket["data"]}/dvc/*", "${local.bucket["models"]}/*"] },
        { actions = concat(local.read, local.write, ["s3:DeleteObject"]), resources = ["${local.bucket["pipeline-root"]}/training/*"] },
        { actions = ["kms:Decrypt", "kms:GenerateDataKey"], resources = [local.s3_key] },
      ]
    }
    # The monitoring pipeline: reads the prediction logs, the served models and the reference data; writes its own
    # part of the pipeline root (artifacts, baselines).
    monitoring = {
      namespace       = var.namespaces.pipeline
      service_account = "radassist-monitoring"
      statements = [
        { actions = local.list, resources = [local.bucket["prediction-logs"], local.bucket["models"], local.bucket["data"], local.bucket["pipeline-root"]] },
        { actions = local.read, resources = ["${local.bucket["prediction-logs"]}/*", "${local.bucket["models"]}/*", "${local.bucket["data"]}/*"] },
        { actions = concat(local.read, local.write, ["s3:DeleteObject"]), resources = ["${local.bucket["pipeline-root"]}/monitoring/*"] },
        { actions = ["kms:Decrypt", "kms:GenerateDataKey"], resources = [local.s3_key] },
      ]
    }
  }
}
