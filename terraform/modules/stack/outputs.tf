output "cluster_name" {
  description = "EKS cluster (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "The Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "image_train" {
  description = "ECR repository of Dockerfile.train's image (the pipeline, `radassist serve`)."
  value       = module.ecr.repository_urls["train"]
}

output "image_portal" {
  description = "ECR repository of Dockerfile.portal's image (web and report workers)."
  value       = module.ecr.repository_urls["portal"]
}

output "bucket_data" {
  description = "The training data bucket (the DVC remote: s3://<bucket>/dvc)."
  value       = module.buckets.bucket_names["data"]
}

output "bucket_pipeline_root" {
  description = "The pipelines' root (s3://<bucket>/training, s3://<bucket>/monitoring)."
  value       = module.buckets.bucket_names["pipeline-root"]
}

output "bucket_models" {
  description = "The model base path's bucket (s3://<bucket>/radassist, .../radassist-seg)."
  value       = module.buckets.bucket_names["models"]
}

output "bucket_scans" {
  description = "The portal's scan blob store."
  value       = module.buckets.bucket_names["scans"]
}

output "bucket_prediction_logs" {
  description = "The model server's prediction logs (logging_config's filename_prefix)."
  value       = module.buckets.bucket_names["prediction-logs"]
}

output "role_portal" {
  description = "IRSA role of the portal's service account."
  value       = module.irsa.role_arns["portal"]
}

output "role_model_server" {
  description = "IRSA role of TF Serving's service account (reads models)."
  value       = module.irsa.role_arns["model-server"]
}

output "role_model_server_logging" {
  description = "IRSA role of our model server's service account (reads models, writes prediction logs)."
  value       = module.irsa.role_arns["model-server-logging"]
}

output "role_pipeline" {
  description = "IRSA role of the training pipeline's service account."
  value       = module.irsa.role_arns["pipeline"]
}

output "role_monitoring" {
  description = "IRSA role of the monitoring pipeline's service account."
  value       = module.irsa.role_arns["monitoring"]
}

output "database_host" {
  description = "RDS PostgreSQL host."
  value       = module.database.address
}

output "database_port" {
  description = "RDS PostgreSQL port."
  value       = module.database.port
}

output "database_name" {
  description = "The portal's database."
  value       = module.database.database_name
}

output "database_user" {
  description = "The database user."
  value       = module.database.username
}

output "database_secret_arn" {
  description = "Secrets Manager secret with the database password (ARN only)."
  value       = module.database.master_secret_arn
}

output "redis_host" {
  description = "ElastiCache Redis primary endpoint (TLS)."
  value       = module.redis.primary_endpoint
}

output "redis_port" {
  description = "Redis's port."
  value       = module.redis.port
}

output "redis_secret_arn" {
  description = "Secrets Manager secret with the Redis AUTH token (ARN only)."
  value       = module.redis.auth_secret_arn
}

output "vpc_cidr" {
  description = "The VPC's range: the NetworkPolicies let the portal's pods reach PostgreSQL and Redis in it."
  value       = module.network.vpc_cidr_block
}

output "region" {
  description = "The AWS region (TF Serving's and boto3's AWS_REGION)."
  value       = data.aws_region.current.name
}
