variable "region" {
  description = "AWS region of the training cluster."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "EKS cluster name."
  type        = string
  default     = "t2v-training"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}$", var.cluster_name))
    error_message = "cluster_name must be lowercase alphanumerics and '-', 2-39 characters, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (the version the charts and manifests are validated against)."
  type        = string
  default     = "1.33"
}

variable "vpc_id" {
  description = "Existing VPC for the cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the control plane ENIs and the CPU pool (at least two AZs)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "gpu_subnet_ids" {
  description = "Subnets for the GPU pool; one AZ keeps all GPU nodes in one cluster placement group (NCCL/EFA bandwidth). Empty: private_subnet_ids[0]."
  type        = list(string)
  default     = []
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public API endpoint (empty: private endpoint only)."
  type        = list(string)
  default     = []
}

# ---- CPU pool: KFP, MLflow, SeaweedFS, curation fan-out -------------------------------------------------

variable "cpu_instance_types" {
  description = "Instance types of the CPU pool."
  type        = list(string)
  default     = ["m7i.8xlarge", "m6i.8xlarge"]
}

variable "cpu_min_size" {
  type    = number
  default = 2
}

variable "cpu_desired_size" {
  type    = number
  default = 3
}

variable "cpu_max_size" {
  type    = number
  default = 20
}

variable "cpu_disk_size_gb" {
  type    = number
  default = 200
}

# ---- GPU pool: H100/H800-class nodes, 8 GPUs each --------------------------------------------------------

variable "gpu_instance_types" {
  description = "8x H100 instances (p5.48xlarge; p5e/p5en for H200). H800 clouds: use the equivalent 8-GPU type."
  type        = list(string)
  default     = ["p5.48xlarge"]
}

variable "gpu_accelerator" {
  description = "Value of the t2v.dev/accelerator node label (Kueue's ResourceFlavor selects on it)."
  type        = string
  default     = "h100"
}

variable "gpus_per_node" {
  description = "GPUs per GPU node (used in the autoscaler node-template tags)."
  type        = number
  default     = 8
}

variable "gpu_min_size" {
  description = "GPU nodes kept when idle (0: scale to zero between runs)."
  type        = number
  default     = 0
}

variable "gpu_desired_size" {
  type    = number
  default = 0
}

variable "gpu_max_size" {
  description = "Upper bound of the GPU pool; keep it equal to the Kueue ClusterQueue GPU quota / gpus_per_node."
  type        = number
  default     = 16

  validation {
    condition     = var.gpu_max_size >= 1 && var.gpu_max_size <= 512
    error_message = "gpu_max_size must be between 1 and 512."
  }
}

variable "gpu_capacity_type" {
  description = "ON_DEMAND or CAPACITY_BLOCK (EC2 Capacity Blocks for ML)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "CAPACITY_BLOCK", "SPOT"], var.gpu_capacity_type)
    error_message = "gpu_capacity_type must be ON_DEMAND, CAPACITY_BLOCK or SPOT."
  }
}

variable "gpu_root_volume_gb" {
  description = "Root volume of GPU nodes (images are large; checkpoints go to S3, not local disk)."
  type        = number
  default     = 1000
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
