"""What the Ollama exporter counts: vLLM's engine signals, derived from the requests it forwards to Ollama.

Ollama (v0.17) serves no metrics. Its scheduler gives each loaded model
OLLAMA_NUM_PARALLEL sequences (default 1; a few architectures are forced to
1) and a KV cache of num_ctx x that many tokens; a request past them waits in
the server on a FIFO semaphore (llm/server.go `s.sem`), up to OLLAMA_MAX_QUEUE.
So, per model, of the requests in flight the oldest `parallel` are running and
the rest are waiting: the figures vLLM calls `vllm:num_requests_running` and
`vllm:num_requests_waiting`, which the orchestrator's router reads (a request
for a model that is still loading counts as running here; it is one short
window after a cold start).

Derived, not measured (Ollama reports neither; the router's score uses KV
use lightly and the prefix counters not at all):
- `vllm:kv_cache_usage_perc`: the running requests' tokens (prompt, estimated
  from its characters until the response says, plus the tokens streamed so far)
  over num_ctx x parallel.
- `vllm:prefix_cache_queries` / `_hits` in tokens: queries are the prompts'
  tokens as Ollama reports them (`prompt_eval_count`, the OpenAI `usage`); in
  v0.17 that count is the whole prompt, cached or not, and no response says how
  much of it came from the cache. Hits are estimated by mirroring Ollama's
  runner cache (runner/ollamarunner/cache.go): `parallel` slots, each holding
  the last sequence it ran (prompt and answer); a new request takes the free
  slot with the longest common prefix and reuses that prefix. The mirror works
  on the rendered messages' characters, converted to tokens by the prompt's own
  tokens-per-character ratio.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Paths whose POST runs the model (server/routes.go, v0.17); everything else is forwarded uncounted.
INFERENCE_PATHS = frozenset(
    {
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
    }
)
DEFAULT_TOKENS_PER_CHAR = 0.5  # until a response has said: Hangul is about 0.7-1, English about 0.25
MAX_OBSERVED_BYTES = 8 << 20  # a non-streamed answer larger than this is relayed but not parsed


def model_key(name: str) -> str:
    """Ollama's own name normalisation, as far as it matters here: no tag means `:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def render_messages(messages: object) -> str:
    """Messages as one string in template order (roles and contents); the prefix structure is what matters."""
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content: Any = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        parts.append(f"{message.get('role', '')}\x1e{content if isinstance(content, str) else ''}\x1f")
    return "".join(parts)


def prompt_of(body: Mapping[str, Any]) -> str:
    """The text a request asks the model to read: its messages, else its prompt or input."""
    if "messages" in body:
        return render_messages(body.get("messages"))
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\x1f".join(v for v in value if isinstance(v, str))
    return ""


def common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by halving (C-speed slice compares, not a Python loop per character)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class Slot:
    text: str = ""
    in_use: bool = False


@dataclass
class Flight:
    """One request in flight to one model."""

    model: str
    prompt: str
    started: float
    slot: Slot | None = None
    hit_chars: int = 0
    prompt_tokens: int | None = None  # from the response, when it says
    output_tokens: int = 0  # streamed pieces so far (Ollama streams one token per piece), or the final count
    answer: list[str] = field(default_factory=list)


@dataclass
class ModelCounts:
    parallel: int
    context: int
    slots: list[Slot]
    flights: list[Flight] = field(default_factory=list)  # oldest first: Ollama's semaphore is FIFO
    tokens_per_char: float = DEFAULT_TOKENS_PER_CHAR
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0


class Tracker:
    """Per-model in-flight requests, the slot mirror and the counters; single-threaded (one event loop)."""

    def __init__(self, parallel: int = 1, context: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.parallel = max(1, parallel)
        self.context = max(1, context)
        self.clock = clock
        self.models: dict[str, ModelCounts] = {}

    def _model(self, name: str) -> ModelCounts:
        counts = self.models.get(name)
        if counts is None:
            slots = [Slot() for _ in range(self.parallel)]
            counts = self.models[name] = ModelCounts(self.parallel, self.context, slots)
        return counts

    def start(self, path: str, body: bytes) -> Flight | None:
        """A request about to be forwarded: a Flight when it runs a model, else None (forwarded uncounted)."""
        if path not in INFERENCE_PATHS:
            return None
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # Ollama answers 400 itself
        if not isinstance(parsed, dict) or not isinstance(parsed.get("model"), str) or not parsed["model"]:
            return None
        flight = Flight(model_key(parsed["model"]), prompt_of(parsed), self.clock())
        self._model(flight.model).flights.append(flight)
        return flight

    def _running(self, counts: ModelCounts) -> list[Flight]:
        return counts.flights[: counts.parallel]

    def _take_slot(self, counts: ModelCounts, flight: Flight) -> None:
        """As the runner does when the sequence starts: the free slot with the longest common prefix."""
        free = [s for s in counts.slots if not s.in_use]
        if not free:
            return
        best = max(free, key=lambda s: common_prefix(s.text, flight.prompt))
        flight.slot, best.in_use = best, True
        flight.hit_chars = common_prefix(best.text, flight.prompt)
        if flight.hit_chars >= len(flight.prompt):
            flight.hit_chars = max(0, len(flight.prompt) - 1)  # the runner always evaluates the last input

    def _promote(self, counts: ModelCounts) -> None:
        for flight in self._running(counts):
            if flight.slot is None:
                self._take_slot(counts, flight)

    def observe(self, flight: Flight, piece: Mapping[str, Any]) -> None:
        """One parsed piece of the response (a streamed line or event, or the whole JSON answer)."""
        counts = self._model(flight.model)
        self._promote(counts)  # a piece of an answer means the request is running
        usage = piece.get("usage")
        if isinstance(piece.get("prompt_eval_count"), int):
            flight.prompt_tokens = int(piece["prompt_eval_count"])
        elif isinstance(usage, Mapping) and isinstance(usage.get("prompt_tokens"), int):
            flight.prompt_tokens = int(usage["prompt_tokens"])
        elif isinstance(usage, Mapping) and isinstance(usage.get("input_tokens"), int):
            flight.prompt_tokens = int(usage["input_tokens"])
        final = None
        if isinstance(piece.get("eval_count"), int):
            final = int(piece["eval_count"])
        elif isinstance(usage, Mapping) and isinstance(usage.get("completion_tokens"), int):
            final = int(usage["completion_tokens"])
        text = _text_of(piece)
        if text:
            flight.answer.append(text)
        if final is not None:
            flight.output_tokens = final
        elif text:
            flight.output_tokens += 1

    def finish(self, flight: Flight) -> None:
        counts = self.models.get(flight.model)
        if counts is None or flight not in counts.flights:
            return
        self._promote(counts)
        counts.flights.remove(flight)
        chars = len(flight.prompt)
        if flight.prompt_tokens is not None and chars:
            # Learn the ratio slowly: one odd prompt (code, numbers) should not swing every estimate.
            counts.tokens_per_char += 0.2 * (flight.prompt_tokens / chars - counts.tokens_per_char)
        tokens = flight.prompt_tokens if flight.prompt_tokens is not None else round(chars * counts.tokens_per_char)
        ratio = tokens / chars if chars else 0.0
        counts.prefix_queries += tokens
        counts.prefix_hits += min(tokens, flight.hit_chars * ratio)
        counts.prompt_tokens += tokens
        counts.generation_tokens += flight.output_tokens
        counts.finished += 1
        if flight.slot is not None:
            answer = "".join(flight.answer)
            flight.slot.text = flight.prompt + (f"assistant\x1e{answer}" if answer else "")
            flight.slot.in_use = False
        self._promote(counts)

    def snapshot(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, counts in self.models.items():
            self._promote(counts)
            running = self._running(counts)
            used = sum(
                (f.prompt_tokens if f.prompt_tokens is not None else len(f.prompt) * counts.tokens_per_char)
                + f.output_tokens
                for f in running
            )
            out[name] = {
                "running": float(len(running)),
                "waiting": float(len(counts.flights) - len(running)),
                "kv_usage": min(1.0, used / (counts.context * counts.parallel)),
                "prefix_queries": counts.prefix_queries,
                "prefix_hits": counts.prefix_hits,
                "prompt_tokens": float(counts.prompt_tokens),
                "generation_tokens": float(counts.generation_tokens),
                "finished": float(counts.finished),
            }
        return out

    def render(self) -> str:
        """The Prometheus text page, in vLLM's names (label `model_name`, as vLLM's)."""
        snap = self.snapshot()
        families = (
            ("vllm:num_requests_running", "gauge", "running", "Requests Ollama is running (oldest in flight)."),
            ("vllm:num_requests_waiting", "gauge", "waiting", "Requests queued in Ollama for a free sequence."),
            ("vllm:kv_cache_usage_perc", "gauge", "kv_usage", "Estimated KV-cache use of the running requests."),
            ("vllm:prefix_cache_queries", "counter", "prefix_queries", "Prompt tokens looked up in the cache."),
            ("vllm:prefix_cache_hits", "counter", "prefix_hits", "Prompt tokens estimated found in the cache."),
            ("vllm:prompt_tokens", "counter", "prompt_tokens", "Prompt tokens of finished requests."),
            ("vllm:generation_tokens", "counter", "generation_tokens", "Generated tokens of finished requests."),
            ("vllm:request_success", "counter", "finished", "Requests finished (answered or abandoned)."),
        )
        lines = []
        for name, kind, key, help_text in families:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            suffix = "_total" if kind == "counter" else ""
            for model, values in sorted(snap.items()):
                label = model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                lines.append(f'{name}{suffix}{{model_name="{label}"}} {values[key]:.6g}')
        return "\n".join(lines) + "\n"


def _text_of(piece: Mapping[str, Any]) -> str:
    """The answer text a piece carries, in Ollama's native and OpenAI's shapes."""
    message = piece.get("message")
    if isinstance(message, Mapping) and isinstance(message.get("content"), str):
        return str(message["content"])
    if isinstance(piece.get("response"), str):
        return str(piece["response"])
    choices = piece.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        first = choices[0]
        for key in ("delta", "message"):
            part = first.get(key)
            if isinstance(part, Mapping) and isinstance(part.get("content"), str):
                return str(part["content"])
        if isinstance(first.get("text"), str):
            return str(first["text"])
    return ""


def env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, "") or default))
    except ValueError:
        return default
