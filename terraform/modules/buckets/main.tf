# The platform's buckets (modules/bucket each) and the bucket their access logs go to.

module "access_logs" {
  source                 = "../bucket"
  name                   = "${var.name}-access-logs"
  kms_key_arn            = null
  log_access             = false
  log_source_bucket_arns = [for role in keys(var.buckets) : "arn:aws:s3:::${var.name}-${role}"]
  noncurrent_days        = 30
  expire_days            = var.access_log_days
  force_destroy          = var.force_destroy
  tags                   = merge(var.tags, { Role = "access-logs" })
}

module "bucket" {
  source            = "../bucket"
  for_each          = var.buckets
  name              = "${var.name}-${each.key}"
  kms_key_arn       = var.kms_key_arn
  log_access        = true
  access_log_bucket = module.access_logs.name
  noncurrent_days   = each.value.noncurrent_days
  expire_days       = each.value.expire_days
  force_destroy     = var.force_destroy
  tags              = merge(var.tags, { Role = each.key })
}
