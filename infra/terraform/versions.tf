terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Configure remote state per environment, e.g.:
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=t2v/eks.tfstate" \
  #                  -backend-config="region=<region>"
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "project"    = "step-video-t2v-training"
      "managed-by" = "terraform"
    })
  }
}
