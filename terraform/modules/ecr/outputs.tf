output "repository_urls" {
  description = "Image URI (without tag) per image."
  value       = { for image, repository in aws_ecr_repository.this : image => repository.repository_url }
}

output "repository_arns" {
  description = "Repository ARN per image (the nodes pull, CI pushes)."
  value       = { for image, repository in aws_ecr_repository.this : image => repository.arn }
}
