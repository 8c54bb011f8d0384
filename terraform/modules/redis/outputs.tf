output "primary_endpoint" {
  description = "The primary's host name (rediss://:<token>@<host>:6379)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  description = "Redis's port."
  value       = aws_elasticache_replication_group.this.port
}

output "auth_secret_arn" {
  description = "The Secrets Manager secret holding the AUTH token (the ARN only, never the token)."
  value       = aws_secretsmanager_secret.auth.arn
}
