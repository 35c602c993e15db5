"""Pure builders: spec + settings -> the desired Kubernetes objects, as plain dicts.

No builder imports kopf, kubernetes or httpx (import-linter enforces it), reads
global state, or mutates its inputs. Each runtime has its own module with one
function from (LocalLLM, settings) to its container; `workload` assembles the
Deployment around it.
"""
