# One bucket as every RadAssist bucket is: versioned, encrypted (SSE-KMS with a bucket key; SSE-S3 for the
# access-log bucket), never public (no ACLs, every public-access block on), TLS-only, access-logged, with
# lifecycle rules for old versions, unfinished uploads and, where wanted, expiry.

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_144: cross-region replication is the hospital's disaster-recovery and data-residency decision (scans are patient data); versioning keeps every overwritten or deleted object here
  # checkov:skip=CKV2_AWS_62: no consumer of S3 event notifications; the pipelines and the monitor read buckets on their own schedule
  # checkov:skip=CKV_AWS_145: the access-log bucket only (kms_key_arn null) uses SSE-S3, because S3 delivers server access logs to SSE-S3 buckets only; every other bucket gets SSE-KMS below
  # checkov:skip=CKV_AWS_18: the access-log bucket only (log_access false) does not log its own access; every other bucket logs to it below
  bucket        = var.name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced" # no ACLs: the bucket policy and IAM decide
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_logging" "this" {
  count         = var.log_access ? 1 : 0
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = "${var.name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "old-versions-and-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  dynamic "rule" {
    for_each = var.expire_days > 0 ? [var.expire_days] : []
    content {
      id     = "expire"
      status = "Enabled"
      filter {}
      expiration {
        days = rule.value
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "this" {
  statement {
    sid     = "DenyPlainHttp"
    effect  = "Deny"
    actions = ["s3:*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = length(var.log_source_bucket_arns) > 0 ? [1] : []
    content {
      sid     = "S3ServerAccessLogs"
      actions = ["s3:PutObject"]
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      resources = ["${aws_s3_bucket.this.arn}/*"]
      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = var.log_source_bucket_arns
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket     = aws_s3_bucket.this.id
  policy     = data.aws_iam_policy_document.this.json
  depends_on = [aws_s3_bucket_public_access_block.this]
}
