"""Query rewriting by a served LLM (SDC_RAG_REWRITE, rag/rewrite.py) measured on the Korean sets (issue #27).

    .venv/bin/python benchmarks/rewrite_eval.py --base-url http://HOST:PORT/v1 --model NAME [--api-key K]

Any OpenAI-compatible chat endpoint: vLLM, Ollama's /v1, sdc-runtime, a cloud API. Each question is searched
the way /api/v1/chat searches it with the option on (`rewrite.search`: weak questions only, the model asked
once with the service's own prompt, greedy, 64 tokens) and without it, on what tuning may look at (the own
set's dev split, heldout3's dev half) and heldout4 whole as the guard; never heldout3's test half. Printed per
set: hit@1 / hit@5 / MRR per kind both ways, how many questions were weak (asked), how many rewrites were
usable, and the model's time per rewrite. With `--show N`, the first N rewrites (question -> query).

A model that knows nothing (sdc-runtime's random-weight tiny model) measures the downside of noise (its
broken UTF-8 is refused by `parse_rewrite`). Without a model, `--simulate` brackets what one could do:
`wrong` answers each weak question with the first words of another passage of its set (a fluent rewrite
that names the wrong thing: the downside), `subject` with the first words of the question's own answer
passage (a rewrite that names the right thing in the documents' words: an upper bound, since it reads the
answer; not a result).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import zlib
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

SIMULATED_WORDS = 4


class Asker:
    """`rewrite.Ask` over HTTP, timed; failures are None, as in the orchestrator. With `simulate`, no HTTP:
    the first words of another passage (`wrong`) or of the question's answer (`subject`)."""

    def __init__(
        self, client: httpx.AsyncClient | None, model: str, simulate: str = "", passages: dict[str, str] | None = None
    ) -> None:
        self.client, self.model = client, model
        self.simulate, self.passages = simulate, passages or {}
        self.question: Question | None = None  # set by `measure` before each search
        self.seconds: list[float] = []
        self.calls = 0
        self.failures = 0

    def _simulated(self) -> str:
        if self.question is None:
            raise RuntimeError("measure() sets the question before each search")
        keys = sorted(self.passages)
        if self.simulate == "subject":
            key = self.question.answer
        else:  # another passage, fixed per question
            others = [k for k in keys if k != self.question.answer]
            key = others[zlib.crc32(self.question.text.encode()) % len(others)]
        return " ".join(self.passages[key].split()[:SIMULATED_WORDS])

    async def __call__(self, messages: list[dict[str, str]]) -> str | None:
        self.calls += 1
        if self.simulate:
            self.seconds.append(0.0)
            return self._simulated()
        if self.client is None:
            raise RuntimeError("no client: a measurement without --simulate needs --base-url")
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
    used = 0
    for q in questions:
        ask.question = q
        base, _ = await rewrite.search(retriever, q.text, 10, None)
        hits, query = await rewrite.search(retriever, q.text, 10, ask)
        if query is not None:
            used += 1
            if used <= show:
                print(f"  {q.text} -> {query}")
        for scores, ranking in ((plain, base), (rewritten, hits)):
            for kind in ("all", q.kind):
                scores[kind].add([h.passage.doc_id for h in ranking], q.answer)
    return plain, rewritten, ask.calls, used


async def run(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    base_url = (args.base_url or "http://unused").rstrip("/") + "/"
    label = f"simulated {args.simulate}" if args.simulate else args.model
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=args.timeout) as client:
        own_passages = load_passages()
        heldout3, h3 = load_heldout("heldout3")
        heldout4, h4 = load_heldout("heldout4")
        h3_retriever = build_retriever(heldout3)
        sets = [
            ("own dev", own_passages, build_retriever(own_passages), [q for q in load_questions() if q.split == "dev"]),
            ("heldout3 dev", heldout3, h3_retriever, [q for q in h3 if q.split == "dev"]),
            (
                "heldout4 (guard, whole)",
                heldout4,
                h3_retriever if heldout4 == heldout3 else build_retriever(heldout4),
                h4,
            ),
        ]
        for name, passages, retriever, questions in sets:
            ask = Asker(None if args.simulate else client, args.model, args.simulate, passages)
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
            print(kind_table({"without": plain, f"with {label}": rewritten}), "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="", help="an OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="", help="the served model's name")
    parser.add_argument("--simulate", choices=["wrong", "subject"], default="", help="no model: see above")
    parser.add_argument("--api-key", default="", help="a bearer token, when the endpoint needs one")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per rewrite call")
    parser.add_argument("--show", type=int, default=0, help="print the first N usable rewrites per set")
    args = parser.parse_args()
    if not args.simulate and not (args.base_url and args.model):
        parser.error("--base-url and --model, or --simulate")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
