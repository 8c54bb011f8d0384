output "role_arns" {
  description = "Role ARN per service account key (the eks.amazonaws.com/role-arn annotations)."
  value       = { for key, role in aws_iam_role.this : key => role.arn }
}
