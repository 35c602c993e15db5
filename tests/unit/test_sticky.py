"""Weighted rendezvous hashing: the split follows the weights, and users move only when they must."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from sdc_orchestrator import sticky
from sdc_orchestrator.shadow import similarity

USERS = [f"user-{i}" for i in range(6000)]


@dataclass(frozen=True)
class E:
    name: str
    weight: int


def assignment(endpoints: list[E]) -> dict[str, str]:
    out = {}
    for user in USERS:
        chosen = sticky.pick(user, endpoints)
        assert chosen is not None
        out[user] = chosen.name
    return out


@pytest.mark.parametrize(
    ("case", "weights"),
    [
        ("canary", {"gemini": 90, "local": 10}),
        ("majority local", {"gemini": 20, "local-a": 40, "local-b": 40}),
        ("even", {"a": 1, "b": 1, "c": 1, "d": 1}),
    ],
)
def test_split_follows_the_weights(case: str, weights: dict[str, int]) -> None:
    counts = Counter(assignment([E(n, w) for n, w in weights.items()]).values())
    total = sum(weights.values())
    for name, weight in weights.items():
        expected = len(USERS) * weight / total
        assert abs(counts[name] - expected) < 0.1 * len(USERS) * 0.5 + 0.15 * expected, (case, counts)


def test_adding_an_endpoint_moves_users_only_onto_it() -> None:
    before = assignment([E("gemini", 50), E("vllm", 50)])
    after = assignment([E("gemini", 50), E("vllm", 50), E("ollama", 50)])
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved and all(after[u] == "ollama" for u in moved)
    assert abs(len(moved) - len(USERS) / 3) < len(USERS) * 0.05


def test_raising_a_weight_moves_users_only_onto_that_endpoint() -> None:
    before = assignment([E("gemini", 90), E("vllm", 10), E("ollama", 10)])
    after = assignment([E("gemini", 90), E("vllm", 40), E("ollama", 10)])
    moved = {u for u in USERS if before[u] != after[u]}
    assert moved and all(after[u] == "vllm" for u in moved)


def test_zero_weight_and_empty_pools() -> None:
    assert sticky.pick("u", [E("a", 0)]) is None
    assert sticky.pick("u", []) is None
    assert [e.name for e in sticky.preference("u", [E("a", 0), E("b", 5)])] == ["b"]


@pytest.mark.parametrize(
    ("case", "a", "b", "low", "high"),
    [
        ("identical", "서울은 대한민국의 수도입니다.", "서울은 대한민국의 수도입니다.", 1.0, 1.0),
        ("particles differ", "서울은 대한민국의 수도입니다.", "서울이 대한민국 수도이다.", 0.99, 1.0),
        ("partly", "서울은 대한민국의 수도입니다.", "부산은 대한민국의 항구 도시입니다.", 0.2, 0.7),
        ("unrelated", "서울은 대한민국의 수도입니다.", "오늘 날씨가 맑아요.", 0.0, 0.0),
        ("both empty", "", "", 1.0, 1.0),
        ("one empty", "서울", "", 0.0, 0.0),
    ],
)
def test_korean_similarity(case: str, a: str, b: str, low: float, high: float) -> None:
    assert low <= similarity(a, b) <= high, (case, similarity(a, b))
