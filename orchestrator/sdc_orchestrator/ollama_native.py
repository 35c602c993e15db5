"""Ollama's own chat API, for the one setting its OpenAI route cannot carry: the context length.

The seed called Ollama with `num_ctx` 8192, and the operator gives cluster
Ollama the same (OLLAMA_CONTEXT_LENGTH). Ollama's `/v1/chat/completions` has no
way to set it per request, so an Ollama the team runs itself, without that
variable, serves its default (2048 or 4096 tokens) and silently drops the
start of a long RAG prompt. For such an endpoint (the model has no `num_ctx` of
its own: fitting.py asks `/api/show`), chats go to `/api/chat` with
`options.num_ctx`, and the answer comes back in OpenAI's shape, streamed too,
so nothing after this module knows the difference.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

FINISH = {"stop": "stop", "length": "length"}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def request(body: dict[str, Any], num_ctx: int) -> dict[str, Any]:
    """An OpenAI chat body as Ollama's /api/chat body, with the context length set."""
    options: dict[str, Any] = {"num_ctx": num_ctx}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        if body.get(ours) is not None:
            options[theirs] = body[ours]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    messages = [{"role": str(m.get("role")), "content": _text(m.get("content"))} for m in body.get("messages") or []]
    return {"model": body.get("model"), "messages": messages, "stream": bool(body.get("stream")), "options": options}


def _usage(data: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def response(data: dict[str, Any]) -> dict[str, Any]:
    """Ollama's /api/chat answer as an OpenAI chat completion."""
    message = data.get("message") or {}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(message.get("content") or "")},
                "finish_reason": FINISH.get(str(data.get("done_reason")), "stop"),
            }
        ],
        "usage": _usage(data),
    }


async def sse_lines(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ollama's streamed JSON lines as OpenAI's server-sent event lines (`data: {...}`, then `data: [DONE]`)."""
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    first = True
    async for line in lines:
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError):
            data = {"error": "Ollama sent a line that is not JSON"}
        if data.get("error"):  # in-band, like any backend failing mid-stream (upstream.py)
            yield f"data: {json.dumps({'error': {'message': str(data['error']), 'type': 'upstream_error'}})}"
            return
        delta: dict[str, str] = {"content": str((data.get("message") or {}).get("content") or "")}
        if first:
            delta = {"role": "assistant", **delta}
            first = False
        done = bool(data.get("done"))
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": data.get("model"),
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": FINISH.get(str(data.get("done_reason")), "stop") if done else None,
                }
            ],
        }
        if done:
            chunk["usage"] = _usage(data)
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}"
        if done:
            yield "data: [DONE]"
            return
