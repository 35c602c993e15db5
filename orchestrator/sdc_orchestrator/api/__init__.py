"""The orchestrator's HTTP API: one router per concern over one answering pipeline (pipeline.py).

health (probes, status, metrics), documents, seed (the seed's /api/v1/chat and /api/v1/generate), openai
(/v1/models, /v1/chat/completions; /v1/completions and /v1/embeddings in completions.py) and migration
(feedback, the shadow report). Routes reach the app's parts through typed dependencies (deps.py).
"""
