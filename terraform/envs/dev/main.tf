# dev: two zones, one NAT gateway, small nodes and database, a public API endpoint for the team's range, no GPU
# nodes, buckets that terraform may empty.

locals {
  tags = { Project = "radassist", Environment = "dev", Owner = var.owner, ManagedBy = "terraform" }
}

module "radassist" {
  source                 = "../../modules/stack"
  name                   = var.name
  bucket_prefix          = var.bucket_prefix
  vpc_cidr               = var.vpc_cidr
  availability_zones     = var.availability_zones
  single_nat_gateway     = true
  kubernetes_version     = var.kubernetes_version
  endpoint_public_access = length(var.public_access_cidrs) > 0
  public_access_cidrs    = var.public_access_cidrs
  cpu_nodes = {
    instance_types = ["m6i.xlarge"]
    min_size       = 1
    desired_size   = 2
    max_size       = 4
    disk_gib       = 100
  }
  gpu_nodes = {
    enabled        = false
    instance_types = ["g5.xlarge"]
    max_size       = 1
    disk_gib       = 200
  }
  database = {
    engine_version            = "16.4"
    instance_class            = "db.t4g.medium"
    allocated_storage_gib     = 20
    max_allocated_storage_gib = 100
    multi_az                  = false
    backup_retention_days     = 7
    deletion_protection       = false
  }
  redis = {
    node_type               = "cache.t4g.small"
    replicas                = 0
    snapshot_retention_days = 1
  }
  log_retention_days      = 30
  prediction_log_days     = 90
  noncurrent_version_days = 30
  force_destroy_buckets   = true
  tags                    = local.tags
}
