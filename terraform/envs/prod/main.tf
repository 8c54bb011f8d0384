# prod: three zones, a NAT gateway per zone, a private API endpoint only (unless ranges are given), larger nodes,
# a Multi-AZ database with deletion protection and 35 days of backups, a Redis replica, the GPU node group for the
# full training recipe (scaled from zero), buckets that terraform never empties.

locals {
  tags = { Project = "radassist", Environment = "prod", Owner = var.owner, ManagedBy = "terraform" }
}

module "radassist" {
  source                 = "../../modules/stack"
  name                   = var.name
  bucket_prefix          = var.bucket_prefix
  vpc_cidr               = var.vpc_cidr
  availability_zones     = var.availability_zones
  single_nat_gateway     = false
  kubernetes_version     = var.kubernetes_version
  endpoint_public_access = length(var.public_access_cidrs) > 0
  public_access_cidrs    = var.public_access_cidrs
  cpu_nodes = {
    instance_types = ["m6i.2xlarge"]
    min_size       = 3
    desired_size   = 3
    max_size       = 10
    disk_gib       = 100
  }
  gpu_nodes = {
    enabled        = true
    instance_types = ["g5.2xlarge"]
    max_size       = 2
    disk_gib       = 200
  }
  database = {
    engine_version            = "16.4"
    instance_class            = "db.m6g.large"
    allocated_storage_gib     = 100
    max_allocated_storage_gib = 1000
    multi_az                  = true
    backup_retention_days     = 35
    deletion_protection       = true
  }
  redis = {
    node_type               = "cache.m6g.large"
    replicas                = 1
    snapshot_retention_days = 7
  }
  log_retention_days      = 365
  prediction_log_days     = 400
  noncurrent_version_days = 90
  force_destroy_buckets   = false
  tags                    = local.tags
}
