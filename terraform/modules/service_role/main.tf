# An IAM role that one AWS service assumes (the EKS control plane, the nodes, RDS's enhanced monitoring, VPC flow
# logs), with AWS's managed policies for that job and, where needed, one inline policy naming its resources.

data "aws_partition" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = var.tag_session ? ["sts:AssumeRole", "sts:TagSession"] : ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = [var.service]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "managed" {
  for_each   = toset(var.managed_policies)
  role       = aws_iam_role.this.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.key}"
}

resource "aws_iam_role_policy" "inline" {
  count  = var.has_inline_policy ? 1 : 0
  name   = "${var.name}-access"
  role   = aws_iam_role.this.id
  policy = var.inline_policy_json
}
