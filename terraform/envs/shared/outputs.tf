# Everything infra/aws needs (infra/aws/terraform-outputs.sh turns it into the overlays' values): image
# repositories, bucket names, IRSA role ARNs, database and Redis endpoints, the ARNs (never the values) of their
# secrets.
output "platform" {
  description = "The platform's outputs (modules/stack/outputs.tf)."
  value       = module.radassist
}
