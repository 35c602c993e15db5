"""A corpus of hostile and malformed requests: each one must get a clean 4xx, none a 5xx, none a hang.

Each case is (name, method, path, raw body or None). Raw bytes, not JSON objects,
so the corpus can hold what a JSON encoder would never write (NaN, 100k-deep
nesting, broken UTF-8). Shared by the test and by anyone who wants the figure.
"""

from __future__ import annotations

import json
from typing import Any

Case = tuple[str, str, str, bytes | None]


def j(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def deep(n: int, leaf: str = "1") -> str:
    return "[" * n + leaf + "]" * n


def deep_dict(n: int) -> dict[str, Any]:
    node: dict[str, Any] = {"x": 1}
    for _ in range(n):
        node = {"x": node}
    return node


def msgs(**extra: Any) -> bytes:
    return j({"messages": [{"role": "user", "content": "안녕"}], **extra})


def raw_msgs(extra: str) -> bytes:
    return b'{"messages": [{"role": "user", "content": "hi"}], ' + extra.encode() + b"}"


def cases() -> list[Case]:
    out: list[Case] = []
    # Bodies no route can parse, sent to every JSON route.
    broken = {
        "empty body": b"",
        "truncated": b"{",
        "not json": b"{not json",
        "null": b"null",
        "a number": b"1",
        "a string": b'"hello"',
        "broken utf-8": b'{"message": "\xff\xfe\xfd"}',
        "100k-deep array": deep(100_000).encode(),
        "100k-deep object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "NaN literal": b'{"message": NaN, "query": NaN, "messages": NaN, "id": NaN, "text": NaN}',
    }
    for path in ("/api/v1/chat", "/v1/chat/completions", "/api/v1/generate", "/generate", "/api/v1/documents"):
        for name, body in broken.items():
            out.append((f"{path}: {name}", "POST", path, body))
    # The seed's chat.
    chat: dict[str, Any] = {
        "message missing": {},
        "message null": {"message": None},
        "message number": {"message": 5},
        "message list": {"message": ["a"]},
        "blank message": {"message": "   "},
        "message over the limit": {"message": "가" * 20_000},
        "unknown provider": {"message": "hi", "provider": "claude"},
        "provider number": {"message": "hi", "provider": 7},
        "unknown model": {"message": "hi", "model": "nope"},
        "model 10k chars": {"message": "hi", "model": "m" * 10_000},
        "stream not bool": {"message": "hi", "stream": "yes"},
        "use_rag not bool": {"message": "hi", "use_rag": {"a": 1}},
        "temperature -1": {"message": "hi", "temperature": -1},
        "temperature 3": {"message": "hi", "temperature": 3},
        "temperature 1e-300": {"message": "hi", "temperature": 1e-300},
        "temperature string": {"message": "hi", "temperature": "hot"},
        "max_tokens 1e9": {"message": "hi", "max_tokens": 1_000_000_000},
        "max_tokens -5": {"message": "hi", "max_tokens": -5},
        "max_tokens 0": {"message": "hi", "max_tokens": 0},
        "max_tokens over SDC_MAX_TOKENS": {"message": "hi", "max_tokens": 4097},
        "max_tokens 1e30": {"message": "hi", "max_tokens": 10**30},
        # Unknown fields are ignored and counted, as the seed's API ignored them (tests/runtime/test_day_one.py).
    }
    out += [(f"chat: {n}", "POST", "/api/v1/chat", j(b)) for n, b in chat.items()]
    out += [
        ("chat: temperature NaN", "POST", "/api/v1/chat", b'{"message": "hi", "temperature": NaN}'),
        ("chat: temperature Infinity", "POST", "/api/v1/chat", b'{"message": "hi", "temperature": Infinity}'),
        ("chat: temperature 1e400", "POST", "/api/v1/chat", b'{"message": "hi", "temperature": 1e400}'),
    ]
    # The OpenAI pass-through.
    openai: dict[str, bytes] = {
        "messages missing": j({}),
        "messages empty": j({"messages": []}),
        "messages a string": j({"messages": "hi"}),
        "message a number": j({"messages": [1]}),
        "unknown role": j({"messages": [{"role": "hacker", "content": "x"}]}),
        "role a list": j({"messages": [{"role": ["user"], "content": "x"}]}),
        "role an object": j({"messages": [{"role": {"user": 1}, "content": "x"}]}),
        "role a number": j({"messages": [{"role": 1, "content": "x"}]}),
        "content missing": j({"messages": [{"role": "user"}]}),
        "content a number": j({"messages": [{"role": "user", "content": 5}]}),
        "image part": j(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
        ),
        "part not an object": j({"messages": [{"role": "user", "content": ["x"]}]}),
        "300 messages": j({"messages": [{"role": "user", "content": "x"}] * 300}),
        "70k characters": j({"messages": [{"role": "user", "content": "가" * 35_000}] * 2}),
        "name 1000 chars": j({"messages": [{"role": "user", "content": "x", "name": "n" * 1000}]}),
        "max_tokens 1e9": msgs(max_tokens=1_000_000_000),
        "max_tokens -5": msgs(max_tokens=-5),
        "max_tokens 0": msgs(max_tokens=0),
        "max_tokens true": msgs(max_tokens=True),
        "max_tokens string": msgs(max_tokens="5"),
        "max_tokens float": msgs(max_tokens=1.5),
        "max_tokens over SDC_MAX_TOKENS": msgs(max_tokens=4097),
        "max_completion_tokens 1e9": msgs(max_completion_tokens=10**9),
        "n 1000": msgs(n=1000),
        "n 0": msgs(n=0),
        "n -1": msgs(n=-1),
        "n float": msgs(n=1.5),
        "temperature 1e-300": msgs(temperature=1e-300),
        "temperature -0.5": msgs(temperature=-0.5),
        "temperature 2.5": msgs(temperature=2.5),
        "temperature string": msgs(temperature="x"),
        "temperature NaN": raw_msgs('"temperature": NaN'),
        "temperature -Infinity": raw_msgs('"temperature": -Infinity'),
        "top_p 0": msgs(top_p=0),
        "top_p 1.5": msgs(top_p=1.5),
        "top_p NaN": raw_msgs('"top_p": NaN'),
        "seed 1e30": msgs(seed=1e30),
        "seed 2**64": msgs(seed=2**64),
        "seed string": msgs(seed="x"),
        "5 stop strings": msgs(stop=["a", "b", "c", "d", "e"]),
        "stop numbers": msgs(stop=[1, 2]),
        "stop empty string": msgs(stop=""),
        "stop 1000 chars": msgs(stop=["s" * 1000]),
        "stop an object": msgs(stop={"a": 1}),
        "presence_penalty 5": msgs(presence_penalty=5),
        "frequency_penalty NaN": raw_msgs('"frequency_penalty": NaN'),
        "logit_bias 500": msgs(logit_bias={"1": 500}),
        "logit_bias a list": msgs(logit_bias=[1]),
        "unknown parameter": msgs(guided_grammar="x"),
        "stream string": msgs(stream="yes"),
        "user 1000 chars": msgs(user="u" * 1000),
        "model a number": msgs(model=5),
        "model 1000 chars": msgs(model="m" * 1000),
        "unknown model": msgs(model="nope"),
        "a list body": j([{"messages": []}]),
        "deep content": j({"messages": [{"role": "user", "content": deep_dict(500)}]}),
        "top_logprobs 100": msgs(top_logprobs=100),
        "tools not a list": msgs(tools="x"),
    }
    out += [(f"openai: {n}", "POST", "/v1/chat/completions", b) for n, b in openai.items()]
    # The old Gemini service's generation endpoint.
    generate: dict[str, Any] = {
        "keywords a number": {"query": "q", "korean_analysis": {"keywords": 5}},
        "keywords a string": {"query": "q", "korean_analysis": {"keywords": "서울"}},
        "keywords numbers": {"query": "q", "korean_analysis": {"keywords": [1, 2]}},
        "100 keywords": {"query": "q", "korean_analysis": {"keywords": ["k"] * 100}},
        "korean_analysis a list": {"query": "q", "korean_analysis": ["x"]},
        "query missing": {"context": "c"},
        "query empty": {"query": ""},
        "query blank": {"query": "   "},
        "query a number": {"query": 5},
        "query over the limit": {"query": "가" * 20_000},
        "context a number": {"query": "q", "context": 5},
        "context numbers": {"query": "q", "context": [1, 2]},
        "context 70k chars": {"query": "q", "context": "가" * 70_000},
    }
    for path in ("/api/v1/generate", "/generate"):
        out += [(f"{path}: {n}", "POST", path, j(b)) for n, b in generate.items()]
    # Documents.
    documents: dict[str, Any] = {
        "id missing": {"text": "t"},
        "id empty": {"id": "", "text": "t"},
        "id 1000 chars": {"id": "i" * 1000, "text": "t"},
        "id a number": {"id": 5, "text": "t"},
        "text empty": {"id": "d", "text": ""},
        "text a number": {"id": "d", "text": 5},
        "metadata a list": {"id": "d", "text": "t", "metadata": [1]},
        "metadata 500 deep": {"id": "d", "text": "t", "metadata": deep_dict(500)},
        "metadata 100 kB": {"id": "d", "text": "t", "metadata": {"blob": "x" * 100_000}},
        "unknown field": {"id": "d", "text": "t", "owner": "x"},
        "empty list": [],
        "100 documents": [{"id": f"d{i}", "text": "t"} for i in range(100)],
        "list with a bad item": [{"id": "ok", "text": "t"}, {"id": ""}],
    }
    out += [(f"documents: {n}", "POST", "/api/v1/documents", j(b)) for n, b in documents.items()]
    out += [
        (
            "documents: NaN in metadata",
            "POST",
            "/api/v1/documents",
            b'{"id": "d", "text": "t", "metadata": {"a": NaN}}',
        ),
        (
            "documents: 20 MB of metadata",
            "POST",
            "/api/v1/documents",
            j({"id": "d", "text": "t", "metadata": {"b": "x" * 20_000_000}}),
        ),
        ("documents: delete unknown id", "DELETE", "/api/v1/documents/" + "z" * 5000, None),
        ("no such route", "GET", "/v2/everything", None),
        ("wrong method", "GET", "/api/v1/chat", None),
        ("wrong method on models", "POST", "/v1/models", j({})),
    ]
    return out
