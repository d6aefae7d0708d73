output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name <this>)."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority" {
  description = "Base64 CA bundle of the API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_oidc_issuer" {
  description = "OIDC issuer URL (for IRSA roles: S3 access for MLflow and the training jobs)."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "node_role_arn" {
  description = "IAM role of the worker nodes."
  value       = aws_iam_role.node.arn
}

output "cpu_node_group" {
  description = "CPU node group name."
  value       = aws_eks_node_group.cpu.node_group_name
}

output "gpu_node_group" {
  description = "GPU node group name."
  value       = aws_eks_node_group.gpu.node_group_name
}

output "gpu_node_selector" {
  description = "Node labels that select the GPU pool (t2v/launcher.py and the Kueue ResourceFlavor use them)."
  value       = local.gpu_labels
}

output "gpu_taint" {
  description = "Taint on the GPU pool (Kubernetes spelling)."
  value       = "nvidia.com/gpu=present:NoSchedule"
}
