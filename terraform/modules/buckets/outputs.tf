output "bucket_names" {
  description = "Bucket name per role."
  value       = merge({ for role, bucket in module.bucket : role => bucket.name }, { access-logs = module.access_logs.name })
}

output "bucket_arns" {
  description = "Bucket ARN per role (the IRSA policies name them)."
  value       = merge({ for role, bucket in module.bucket : role => bucket.arn }, { access-logs = module.access_logs.arn })
}
