# EKS cluster with two managed node groups:
#   cpu - KFP, MLflow, SeaweedFS and CPU stages (curation fan-out); label t2v.dev/pool=cpu
#   gpu - H100/H800-class 8-GPU nodes for TrainJobs; label t2v.dev/pool=gpu, taint nvidia.com/gpu=present:NoSchedule
# t2v/launcher.py selects nodes with the same label and tolerates the same taint; Kueue's ResourceFlavors
# (infra/addons/kueue) select on them too. The GPU AMI (AL2023 NVIDIA) ships the driver and container toolkit,
# so the GPU operator runs with driver/toolkit disabled (infra/addons/gpu-operator/values.yaml).

locals {
  pool_label_key  = "t2v.dev/pool"
  accel_label_key = "t2v.dev/accelerator"
  gpu_subnet_ids  = length(var.gpu_subnet_ids) > 0 ? var.gpu_subnet_ids : [var.private_subnet_ids[0]]

  cpu_labels = {
    "t2v.dev/pool" = "cpu"
  }
  gpu_labels = {
    "t2v.dev/pool"           = "gpu"
    "t2v.dev/accelerator"    = var.gpu_accelerator
    "nvidia.com/gpu.present" = "true"
  }
  gpu_taint = {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }
}

data "aws_partition" "current" {}

# ---- IAM ------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.cluster_name}-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.cluster_name}-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
  ])
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/${each.value}"
}

# ---- cluster --------------------------------------------------------------------------------------------

resource "aws_eks_cluster" "this" {
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = var.private_subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.endpoint_public_access_cidrs) > 0
    public_access_cidrs     = length(var.endpoint_public_access_cidrs) > 0 ? var.endpoint_public_access_cidrs : null
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator"]

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_eks_addon" "core" {
  for_each = toset(["vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent"])

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_eks_node_group.cpu]
}

# The EBS CSI driver provisions the gp3 volumes the cluster's claims ask for (StorageClass gp3,
# infra/addons/storage): SeaweedFS's disks and the pipeline tasks' scratch volumes (a curate shard's
# spooled clips and tars; ClusterConfig.resources.curate.scratch). Its controller gets AWS rights through
# EKS Pod Identity (the eks-pod-identity-agent add-on above).
data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]
    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.cluster_name}-ebs-csi"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_assume.json
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "aws-ebs-csi-driver"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  pod_identity_association {
    role_arn        = aws_iam_role.ebs_csi.arn
    service_account = "ebs-csi-controller-sa"
  }

  depends_on = [aws_eks_node_group.cpu, aws_eks_addon.core, aws_iam_role_policy_attachment.ebs_csi]
}

# ---- node groups ----------------------------------------------------------------------------------------

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "cpu"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.private_subnet_ids
  instance_types  = var.cpu_instance_types
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  disk_size       = var.cpu_disk_size_gb

  scaling_config {
    min_size     = var.cpu_min_size
    desired_size = var.cpu_desired_size
    max_size     = var.cpu_max_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = local.cpu_labels

  tags = {
    "k8s.io/cluster-autoscaler/enabled"                        = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}"            = "owned"
    "k8s.io/cluster-autoscaler/node-template/label/t2v.dev/pool" = "cpu"
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size] # the autoscaler owns it
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# GPU nodes in one cluster placement group, with a large root volume.
resource "aws_placement_group" "gpu" {
  name     = "${var.cluster_name}-gpu"
  strategy = "cluster"
}

resource "aws_launch_template" "gpu" {
  name_prefix = "${var.cluster_name}-gpu-"

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.gpu_root_volume_gb
      volume_type           = "gp3"
      iops                  = 16000
      throughput            = 1000
      encrypted             = true
      delete_on_termination = true
    }
  }

  placement {
    group_name = aws_placement_group.gpu.name
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      "Name"         = "${var.cluster_name}-gpu"
      "t2v.dev/pool" = "gpu"
    }
  }
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu-${var.gpu_accelerator}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = local.gpu_subnet_ids
  instance_types  = var.gpu_instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"
  capacity_type   = var.gpu_capacity_type

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
  }

  scaling_config {
    min_size     = var.gpu_min_size
    desired_size = var.gpu_desired_size
    max_size     = var.gpu_max_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = local.gpu_labels

  taint {
    key    = "nvidia.com/gpu"
    value  = "present"
    effect = "NO_SCHEDULE"
  }

  # Scale-from-zero hints for the cluster autoscaler: labels, taint and GPU count of a node not yet started.
  tags = {
    "k8s.io/cluster-autoscaler/enabled"                                = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}"                    = "owned"
    "k8s.io/cluster-autoscaler/node-template/label/t2v.dev/pool"        = "gpu"
    "k8s.io/cluster-autoscaler/node-template/label/t2v.dev/accelerator" = var.gpu_accelerator
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"      = "present:NoSchedule"
    "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"  = tostring(var.gpus_per_node)
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}
