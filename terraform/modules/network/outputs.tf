output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 range."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets, one per availability zone (nodes, RDS, ElastiCache)."
  value       = [for subnet in aws_subnet.private : subnet.id]
}

output "private_subnet_cidrs" {
  description = "The private subnets' ranges (NetworkPolicies allow the database and Redis there)."
  value       = [for subnet in aws_subnet.private : subnet.cidr_block]
}

output "public_subnet_ids" {
  description = "Public subnets, one per availability zone (internet-facing load balancers)."
  value       = [for subnet in aws_subnet.public : subnet.id]
}

output "s3_endpoint_id" {
  description = "The S3 gateway endpoint: bucket policies may require it."
  value       = aws_vpc_endpoint.s3.id
}
