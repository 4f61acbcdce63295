"""The program a Machine's drain Job runs: cordon a Node, evict its pods (respecting PodDisruptionBudgets), wait.

`python -m drain NODE` in the hook image, with the Job's ServiceAccount. It talks to the API server directly
(standard library plus requests) so the image needs no kubectl, and it uses exactly four API calls, which is all
the ClusterRole in kubernetes/drain grants: get and patch nodes, list pods, create pods/eviction.
"""
