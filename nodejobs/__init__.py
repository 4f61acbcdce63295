"""The programs of a Machine's Node-side Jobs: bootstrap tokens in kube-system, and Node labels, taints,
Terminating condition and removal (`python -m nodejobs ...`, declared by hooks/mcm/node_side.py).

Like the drain program (drain/), they talk to the API server directly with the Job's ServiceAccount and make only
the calls their RBAC grants (kubernetes/node-jobs/, tested against a recording of the calls).
"""
