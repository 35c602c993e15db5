"""Query rewriting by a served LLM (SDC_RAG_REWRITE, rag/rewrite.py) measured on the Korean sets (issue #27).

    .venv/bin/python benchmarks/rewrite_eval.py --base-url http://HOST:PORT/v1 --model NAME [--api-key K]

Any OpenAI-compatible chat endpoint: vLLM, Ollama's /v1, sdc-runtime, a cloud API. Each question is searched
the way /api/v1/chat searches it with the option on (`rewrite.search`: weak questions only, the model asked
once with the service's own prompt, greedy, 64 tokens) and without it, on what tuning may look at (the own
set's dev split, heldout3's dev half) and heldout4 whole as the guard; never heldout3's test half. Printed per
set: hit@1 / hit@5 / MRR per kind both ways, how many questions were weak (asked), how many rewrites were
usable, and the model's time per rewrite. With `--show N`, the first N rewrites (question -> query).

A model that knows nothing (sdc-runtime's random-weight tiny model) measures the downside: what a rewrite
that is noise costs the questions it touches.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

import httpx
from sdc_orchestrator.rag import rewrite
from sdc_orchestrator.rag.retriever import Retriever

from benchmarks.retrieval_eval import (
    KINDS,
    Question,
    Scores,
    build_retriever,
    kind_table,
    load_heldout,
    load_passages,
    load_questions,
)


class Asker:
    """`rewrite.Ask` over HTTP, timed; failures are None, as in the orchestrator."""

    def __init__(self, client: httpx.AsyncClient, model: str) -> None:
        self.client, self.model = client, model
        self.seconds: list[float] = []
        self.failures = 0

    async def __call__(self, messages: list[dict[str, str]]) -> str | None:
        body = {"model": self.model, "messages": messages, "max_tokens": rewrite.MAX_TOKENS, "temperature": 0.0}
        started = time.perf_counter()
        try:
            resp = await self.client.post("chat/completions", json=body)
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            self.failures += 1
            return None
        self.seconds.append(time.perf_counter() - started)
        return content if isinstance(content, str) else None


async def measure(
    retriever: Retriever, questions: Sequence[Question], ask: Asker, show: int
) -> tuple[dict[str, Scores], dict[str, Scores], int, int]:
    plain = {kind: Scores() for kind in ("all", *KINDS)}
    rewritten = {kind: Scores() for kind in ("all", *KINDS)}
    asked = used = 0
    for q in questions:
        before = len(ask.seconds) + ask.failures
        base, _ = await rewrite.search(retriever, q.text, 10, None)
        hits, query = await rewrite.search(retriever, q.text, 10, ask)
        asked += len(ask.seconds) + ask.failures - before
        if query is not None:
            used += 1
            if used <= show:
                print(f"  {q.text} -> {query}")
        for scores, ranking in ((plain, base), (rewritten, hits)):
            for kind in ("all", q.kind):
                scores[kind].add([h.passage.doc_id for h in ranking], q.answer)
    return plain, rewritten, asked, used


async def run(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    base_url = args.base_url.rstrip("/") + "/"
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=args.timeout) as client:
        own = build_retriever(load_passages())
        heldout3, h3 = load_heldout("heldout3")
        heldout4, h4 = load_heldout("heldout4")
        h3_retriever = build_retriever(heldout3)
        sets = [
            ("own dev", own, [q for q in load_questions() if q.split == "dev"]),
            ("heldout3 dev", h3_retriever, [q for q in h3 if q.split == "dev"]),
            ("heldout4 (guard, whole)", h3_retriever if heldout4 == heldout3 else build_retriever(heldout4), h4),
        ]
        for name, retriever, questions in sets:
            ask = Asker(client, args.model)
            plain, rewritten, asked, used = await measure(retriever, questions, ask, args.show)
            timing = (
                f"{statistics.median(ask.seconds):.2f} s median per rewrite, {max(ask.seconds):.2f} s max"
                if ask.seconds
                else "no rewrite answered"
            )
            print(
                f"{name}: {len(questions)} questions, {asked} weak (asked), {used} usable rewrites, "
                f"{ask.failures} failed calls; {timing}"
            )
            print(kind_table({"without": plain, f"with {args.model}": rewritten}), "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True, help="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="the served model's name")
    parser.add_argument("--api-key", default="", help="a bearer token, when the endpoint needs one")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per rewrite call")
    parser.add_argument("--show", type=int, default=0, help="print the first N usable rewrites per set")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
