# The EKS cluster: private subnets, secrets encrypted with KMS, every control-plane log type kept, the VPC CNI
# with network-policy enforcement (infra/'s NetworkPolicies are enforced), an OIDC provider for IAM roles of
# service accounts (IRSA), a CPU node group and an optional GPU node group for the full training recipe. Nodes
# require IMDSv2 with one hop, so pods cannot borrow the node's role: they get their own through IRSA.

module "cluster_role" {
  source           = "../service_role"
  name             = "${var.name}-cluster"
  service          = "eks.amazonaws.com"
  tag_session      = true
  managed_policies = ["AmazonEKSClusterPolicy"]
  tags             = var.tags
}

resource "aws_cloudwatch_log_group" "cluster" {
  # checkov:skip=CKV_AWS_338: retention is the environment's variable: envs/prod keeps 365 days, envs/dev 30 (no patient traffic)
  name              = "/aws/eks/${var.name}/cluster" # the name EKS writes to
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_eks_cluster" "this" {
  # checkov:skip=CKV_AWS_39: the public endpoint is off unless public_access_cidrs names ranges (validated: never 0.0.0.0/0); envs/prod leaves it empty (VPN to the private endpoint), envs/dev may open it to the team's range
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = module.cluster_role.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = var.endpoint_public_access
    public_access_cidrs     = var.endpoint_public_access ? var.public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = var.secrets_kms_key_arn
    }
  }

  access_config {
    authentication_mode = "API"
  }

  tags       = var.tags
  depends_on = [module.cluster_role, aws_cloudwatch_log_group.cluster]
}

resource "aws_iam_openid_connect_provider" "this" {
  url             = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = var.oidc_thumbprints
  tags            = var.tags
}

module "node_role" {
  source           = "../service_role"
  name             = "${var.name}-node"
  service          = "ec2.amazonaws.com"
  managed_policies = ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]
  tags             = var.tags
}

resource "aws_launch_template" "node" {
  for_each = { cpu = var.cpu_nodes.disk_gib, gpu = var.gpu_nodes.disk_gib }
  name     = "${var.name}-${each.key}"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # not from pods: they use IRSA
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = each.value
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-${each.key}" })
  }
  tags = var.tags
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = module.node_role.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.cpu_nodes.instance_types
  labels          = { "radassist.io/pool" = "cpu" }

  scaling_config {
    min_size     = var.cpu_nodes.min_size
    desired_size = var.cpu_nodes.desired_size
    max_size     = var.cpu_nodes.max_size
  }

  launch_template {
    id      = aws_launch_template.node["cpu"].id
    version = aws_launch_template.node["cpu"].latest_version
  }

  update_config {
    max_unavailable = 1
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size] # the cluster autoscaler moves it
  }
  tags       = var.tags
  depends_on = [module.node_role]
}

resource "aws_eks_node_group" "gpu" {
  count           = var.gpu_nodes.enabled ? 1 : 0
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu"
  node_role_arn   = module.node_role.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.gpu_nodes.instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"
  labels          = { "radassist.io/pool" = "gpu" }

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.gpu_nodes.max_size
  }

  launch_template {
    id      = aws_launch_template.node["gpu"].id
    version = aws_launch_template.node["gpu"].latest_version
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }
  tags       = var.tags
  depends_on = [module.node_role]
}

resource "aws_eks_addon" "vpc_cni" {
  cluster_name = aws_eks_cluster.this.name
  addon_name   = "vpc-cni"
  configuration_values = jsonencode({
    enableNetworkPolicy = "true" # enforce infra/'s NetworkPolicies
  })
}

resource "aws_eks_addon" "core" {
  for_each     = toset(["coredns", "kube-proxy"])
  cluster_name = aws_eks_cluster.this.name
  addon_name   = each.key
  depends_on   = [aws_eks_node_group.cpu]
}
