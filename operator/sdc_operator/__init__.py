"""The LocalLLM operator: one `LocalLLM` object becomes one served model.

Rings, outer to inner (each imports only inward; `.importlinter`'s layers contract enforces it):
- `handlers`: Kopf's entry points only (startup, indexes, event handlers); `main` and `crd` are the commands.
- `retry`: a failed reconcile retried on a timer.
- `reconcile` (read, compare, apply), `status_writer` (status and Events), `publisher` (the endpoints
  ConfigMap): each independent of the others.
- `indexes` (what the watches keep) and `state` (what the operator remembers, and its settings).
- `kube`: the only module that talks to the API server.
- pure: `plan` (a LocalLLM's children: ownership, drift, the plan), `fit`, `status` (derivation and
  patch), `policy`, `publish`, `backoff`, `peering`, `triggers`, `debounce`; then `builders` (desired
  objects), then `spec` (typed models of the resource, and the CRD generated from them) and `settings`.
"""

GROUP = "llm.sdc.dev"
VERSION = "v1alpha1"
PLURAL = "localllms"
KIND = "LocalLLM"
