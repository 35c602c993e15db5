"""The LocalLLM operator: one `LocalLLM` object becomes one served model.

Three rings, inner to outer: `spec` (typed models of the resource, and the CRD
generated from them), `builders`/`status`/`plan` (pure functions from spec and
observed objects to desired objects, conditions and actions), and `handlers`
plus `kube` (the only modules that talk to Kopf and the API server).
"""

GROUP = "llm.sdc.dev"
VERSION = "v1alpha1"
PLURAL = "localllms"
KIND = "LocalLLM"
