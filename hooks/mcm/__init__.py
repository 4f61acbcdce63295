"""Machine-controller-manager semantics, provider-neutral: Machines, sets, deployments, classes and drains."""
