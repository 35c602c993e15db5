"""The RAG orchestrator: the chat backend in front of every model.

It keeps the seed's API (`/api/v1/chat`, the old Gemini generation endpoint)
and adds an OpenAI-compatible one; it retrieves Korean context, routes to
local models by weight, and falls back to the cloud API when they fail.
"""
