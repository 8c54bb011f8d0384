output "address" {
  description = "The database's host name."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "The database's port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "The portal's database."
  value       = aws_db_instance.this.db_name
}

output "username" {
  description = "The master user (its password is in master_secret_arn)."
  value       = aws_db_instance.this.username
}

output "master_secret_arn" {
  description = "The Secrets Manager secret RDS keeps the master password in (the ARN only, never the password)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}
