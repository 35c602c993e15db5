"""The Transformers runtime (`sdc-runtime`), the model fetcher and the tiny-model maker.

The runtime serves the OpenAI protocol over any local Transformers model
directory, so the orchestrator talks to it exactly as it talks to vLLM and
Ollama. Heavy imports (torch, transformers) happen inside functions: the
fetcher runs in download pods that do not carry torch.
"""
