"""The target cluster (where a Machine's Node lives), named by a kubeconfig Secret in the Machine's namespace."""
