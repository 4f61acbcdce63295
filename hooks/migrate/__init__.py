"""Moving a namespace from Gardener's machine-controller-manager to metal-machine-hooks: `python -m hooks.migrate`.

plan.py decides (pure), kube.py and devices.py read and write (Kubernetes API, read-only Metal API), __main__.py
runs the steps; docs/migrating-from-mcm.md is the runbook.
"""
