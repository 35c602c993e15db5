"""A static embedding model (a token -> vector table, mean-pooled) measured on the Korean dev sets (issue #27).

    .venv/bin/python benchmarks/static_embedding_eval.py --weights W.safetensors --tokenizer tokenizer.json

For a model that ships inside a pip package, which this machine can install while it can reach no model hub.
The one found with weights in its wheel is WordLlama (`pip download --no-deps wordllama==0.4.0.post1`, MIT):
`wordllama/weights/l2_supercat_256.safetensors` (32,000 x 256, fp16) and
`wordllama/tokenizers/l2_supercat_tokenizer_config.json` (Llama 2's tokenizer). Model2Vec exports have the
same shape (a safetensors table and a tokenizer.json) and run the same way.

Each text is tokenized, its token vectors averaged and normalized (WordLlama's own pooling); the table then
shows the dense vectors alone and sent through the service's dense path (the way a served embedding model's
vectors are fused: `Weights.dense`), on the dev sets only (the own set's dev split and heldout3's odd rows,
as `retrieval_eval.py --dev`), beside the service without them and Kiwi BM25. It also prints the share of
the passages' tokens that are byte fallbacks: a tokenizer that spells Korean in bytes has no vectors that
carry its meaning.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from sdc_orchestrator.rag.korean import morphemes
from sdc_orchestrator.rag.retriever import Weights
from tokenizers import Tokenizer

from benchmarks.retrieval_eval import (
    Question,
    Ranker,
    bm25_ranker,
    build_retriever,
    dense_ranker,
    evaluate,
    kind_table,
    load_heldout,
    load_passages,
    load_questions,
    service_ranker,
)

Embed = Callable[[str], list[float]]


def static_embedder(weights: Path, tokenizer: Path) -> tuple[Embed, Tokenizer]:
    tables = load_file(str(weights))
    if len(tables) != 1:
        raise SystemExit(f"{weights}: expected one embedding table, found {sorted(tables)}")
    table = next(iter(tables.values())).astype(np.float32)
    tok = Tokenizer.from_file(str(tokenizer))

    def embed(text: str) -> list[float]:
        ids = [i for i in tok.encode(text).ids if i < len(table)]
        vec = table[ids].mean(0) if ids else np.zeros(table.shape[1], np.float32)
        unit: list[float] = (vec / max(float(np.linalg.norm(vec)), 1e-9)).tolist()
        return unit

    return embed, tok


def byte_share(tok: Tokenizer, texts: list[str]) -> float:
    tokens = [t for text in texts for t in tok.encode(text).tokens]
    return sum(t.startswith("<0x") for t in tokens) / max(len(tokens), 1)


def dense_only(passages: dict[str, str], embed: Embed) -> Ranker:
    keys = list(passages)
    matrix = np.array([embed(passages[k]) for k in keys], np.float32)
    return lambda q: [keys[i] for i in np.argsort(-(matrix @ np.array(embed(q), np.float32)))[:10]]


def fused(passages: dict[str, str], embed: Embed, weight: float) -> Ranker:
    vectors = {key: embed(text) for key, text in passages.items()}
    return dense_ranker(passages, Weights(dense=weight), vectors, embed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="a safetensors file with one [vocab, dim] table")
    parser.add_argument("--tokenizer", type=Path, required=True, help="the model's tokenizer.json")
    parser.add_argument("--dense", type=float, nargs="+", default=[0.5, 1.0], help="fusion weights to measure")
    args = parser.parse_args()
    embed, tok = static_embedder(args.weights, args.tokenizer)
    own_passages = load_passages()
    sets: list[tuple[str, dict[str, str], list[Question]]] = [
        ("own dev", own_passages, [q for q in load_questions() if q.split == "dev"]),
    ]
    heldout3, questions = load_heldout("heldout3")
    sets.append(("heldout3 dev", heldout3, [q for q in questions if q.split == "dev"]))
    for name, passages, dev in sets:
        print(f"{name}: {len(dev)} questions; byte-fallback tokens {byte_share(tok, list(passages.values())):.0%}")
        systems = {
            "Kiwi BM25": evaluate(bm25_ranker(passages, morphemes), dev),
            "service": evaluate(service_ranker(build_retriever(passages)), dev),
            "dense only": evaluate(dense_only(passages, embed), dev),
            **{f"service + dense {w:g}": evaluate(fused(passages, embed, w), dev) for w in args.dense},
        }
        print(kind_table(systems), "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
