"""Replica routing's pure parts: the prefix index, the metrics parser, replica sets, and the policy's choices."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sdc_orchestrator.backends import Endpoint, published_endpoints
from sdc_orchestrator.router import Router
from sdc_orchestrator.routing import replicas
from sdc_orchestrator.routing.policy import Hint, ReplicaPolicy, hint
from sdc_orchestrator.routing.prefix_index import BLOCK_CHARS, PrefixIndex, block_keys, render
from sdc_orchestrator.routing.scrape import Scraper, Signals, parse

DOC_A = "연차 휴가는 입사 1년 후 15일이 부여되며, 사용하지 않은 연차는 다음 해로 이월되지 않는다. " * 8
DOC_B = "출장 보고서는 복귀 후 5영업일 안에 제출해야 하며, 늦으면 출장비 정산이 보류된다. " * 8


def messages(doc: str, question: str = "질문입니다") -> list[dict[str, str]]:
    return [{"role": "system", "content": doc}, {"role": "user", "content": question}]


def replica(i: int, metrics: bool = True, weight: int = 100, origin: str = "sdc/gemma") -> Endpoint:
    return Endpoint(
        f"{origin}/pod-{i}",
        "vllm",
        f"http://10.0.0.{i}:8000/v1",
        "gemma",
        weight,
        namespace="sdc",
        metrics_url=f"http://10.0.0.{i}:8000/metrics" if metrics else None,
        origin=origin,
    )


class FixedScraper(Scraper):
    """Readings set by the test (no HTTP)."""

    def __init__(self, readings: dict[str, Signals]) -> None:
        super().__init__(clock=lambda: 100.0)
        self.readings = readings

    def signals(self, name: str) -> Signals | None:
        return self.readings.get(name)


def reading(waiting: float = 0, running: float = 0, kv: float = 0.0) -> Signals:
    return Signals(waiting, running, kv, 0, 0, 100.0)


# -- prefix index ---------------------------------------------------------------------------------------


def test_block_keys_chain_so_a_shared_prefix_shares_keys() -> None:
    a, b = block_keys(render(messages(DOC_A, "하나"))), block_keys(render(messages(DOC_A, "둘")))
    assert len(a) == len(render(messages(DOC_A, "하나"))) // BLOCK_CHARS
    shared = sum(1 for x, y in zip(a, b, strict=False) if x == y)
    assert shared == len(DOC_A) // BLOCK_CHARS or shared >= len(a) - 1
    other = block_keys(render(messages(DOC_B)))
    assert not set(a) & set(other)


def test_index_finds_the_longest_recorded_prefix_and_evicts_lru() -> None:
    index = PrefixIndex(entries_per_replica=1000)
    keys = block_keys(render(messages(DOC_A)))
    index.record("r1", keys[:5])
    assert index.match("r1", keys) == 5 and index.match("r2", keys) == 0
    index.record("r1", keys)
    assert index.match("r1", keys) == len(keys)
    small = PrefixIndex(entries_per_replica=4)
    small.record("r1", keys[:4])
    small.record("r1", block_keys(render(messages(DOC_B)))[:2])  # evicts A's two tail blocks, not its head
    assert small.match("r1", keys) == 2 and small.size("r1") == 4
    index.keep_only(["r2"])
    assert index.match("r1", keys) == 0


@pytest.mark.parametrize(
    "hostile", [None, "text", [1, 2], [{"role": "user", "content": None}], [{"content": [{"x": 1}]}]]
)
def test_render_never_fails(hostile: object) -> None:
    assert isinstance(hint(hostile), Hint)


# -- metrics page --------------------------------------------------------------------------------------


def test_parse_reads_vllm_names_and_skips_the_rest() -> None:
    page = "\n".join(
        [
            "# TYPE vllm:num_requests_waiting gauge",
            'vllm:num_requests_waiting{model_name="a"} 3.0',
            'vllm:num_requests_waiting{model_name="b"} 1.0',
            'vllm:num_requests_running{model_name="a"} 2.0',
            'vllm:kv_cache_usage_perc{model_name="a"} 0.5',
            "# TYPE vllm:prefix_cache_queries counter",
            'vllm:prefix_cache_queries_total{model_name="a"} 1000.0',
            'vllm:prefix_cache_hits_total{model_name="a"} 800.0',
            'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="a"} 7.0',
            "garbage that is not the text format {{{",
            "",
        ]
    )
    got = parse(page, 1.0)
    assert (got.waiting, got.running, got.kv_usage, got.prefix_queries, got.prefix_hits) == (4, 2, 0.5, 1000, 800)
    assert parse("", 1.0).waiting == 0


def test_a_stale_reading_is_not_used() -> None:
    now = [0.0]
    scraper = Scraper(clock=lambda: now[0])
    scraper._latest["r"] = reading()
    now[0] = 100.0
    assert scraper.signals("r") is not None
    now[0] = 110.0
    assert scraper.signals("r") is None


# -- replica sets ---------------------------------------------------------------------------------------


def test_published_replicas_group_by_namespace_and_model_and_old_documents_still_load(tmp_path: Path) -> None:
    entries = [
        {"name": "sdc/gemma", "replica": "gemma-a", "runtime": "vllm", "model": "gemma", "namespace": "sdc",
         "baseUrl": "http://10.0.0.1:8000/v1", "metricsUrl": "http://10.0.0.1:8000/metrics", "weight": 100},
        {"name": "sdc/gemma", "replica": "gemma-b", "runtime": "vllm", "model": "gemma", "namespace": "sdc",
         "baseUrl": "http://10.0.0.2:8000/v1", "metricsUrl": "http://10.0.0.2:8000/metrics", "weight": 100},
        {"name": "team-b/gemma", "replica": "g-a", "runtime": "vllm", "model": "gemma", "namespace": "team-b",
         "baseUrl": "http://10.0.0.3:8000/v1", "weight": 100},
        {"name": "sdc/old", "runtime": "vllm", "model": "exaone", "baseUrl": "http://old.sdc.svc:8000/v1"},
    ]  # fmt: skip
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"endpoints": entries}))
    endpoints = published_endpoints(path)
    assert [e.name for e in endpoints] == ["sdc/gemma/gemma-a", "sdc/gemma/gemma-b", "team-b/gemma/g-a", "sdc/old"]
    assert endpoints[0].metrics_url == "http://10.0.0.1:8000/metrics" and endpoints[3].metrics_url is None
    sets = replicas.group(endpoints)
    assert [len(s.replicas) for s in sets] == [2, 1, 1]
    assert sets[0].weight == 100, "one LocalLLM's pods share its weight, they do not multiply it"


# -- the policy ------------------------------------------------------------------------------------------


def policy(readings: dict[str, Signals] | None = None, seed: int = 1) -> ReplicaPolicy:
    return ReplicaPolicy(scraper=FixedScraper(readings or {}), rng=random.Random(seed))  # noqa: S311 - reproducible choices


def test_affinity_keeps_a_prefix_on_one_replica_and_spreads_new_ones() -> None:
    pods = [replica(i) for i in range(4)]
    chooser = policy()
    docs = [f"{i}번 문서: " + DOC_A for i in range(12)]
    first = {doc: chooser.choose(pods, lambda _e: 0, hint(messages(doc))).name for doc in docs}
    for doc in docs:
        for q in ("다른 질문", "또 다른 질문"):
            assert chooser.choose(pods, lambda _e: 0, hint(messages(doc, q))).name == first[doc]
    assert len(set(first.values())) >= 3, "new prefixes are hashed over the replicas, not piled on one"


def test_load_bound_spills_a_hot_prefix_and_never_drops_a_replica_without_metrics() -> None:
    pods = [replica(0), replica(1), replica(2, metrics=False)]
    busy = {pods[0].name: reading(waiting=6, running=2, kv=0.9), pods[1].name: reading(running=1)}
    chooser = policy(busy)
    keys = hint(messages(DOC_A))
    chooser.index.record(pods[0].name, keys.keys)
    in_flight = {pods[0].name: 8, pods[1].name: 1, pods[2].name: 0}
    chosen = chooser.choose(pods, lambda e: in_flight[e.name], keys)
    assert chosen.name == pods[2].name, "over the bound: the least loaded, scored on the router's own count"
    # Once the holder is back within the bound, affinity wins again.
    calm = policy({pods[0].name: reading(running=1), pods[1].name: reading(running=1)})
    calm.index.record(pods[0].name, keys.keys)
    assert calm.choose(pods, lambda e: 1 if e.name != pods[2].name else 0, keys).name == pods[0].name


def test_herd_protection_spreads_a_burst_between_scrapes() -> None:
    """50 requests of one prefix before any scrape: the router's own counts stop the pile-up."""
    pods = [replica(i) for i in range(4)]
    chooser = policy({p.name: reading() for p in pods})  # every reading idle (stale in effect)
    in_flight = dict.fromkeys((p.name for p in pods), 0)
    for _ in range(50):
        chosen = chooser.choose(pods, lambda e: in_flight[e.name], hint(messages(DOC_A)))
        in_flight[chosen.name] += 1
    # Bounded loads' promise: nobody above (1 + epsilon) x the mean (+ slack); the prefix is replicated, not herded.
    assert max(in_flight.values()) <= 1.25 * 50 / 4 + 2 + 1, in_flight
    assert sum(1 for n in in_flight.values() if n) >= 3, in_flight


def test_a_conversation_stays_on_its_replica_however_many_turns_it_answered_since_the_scrape() -> None:
    """Six quick turns before any scrape: the herd count says 6 requests, none of them is still there."""
    pods = [replica(i) for i in range(4)]
    chooser = policy({p.name: reading() for p in pods})
    history = messages(DOC_A, "첫 질문")
    holder = chooser.choose(pods, lambda _e: 0, hint(history))
    for turn in range(5):  # each answered before the next is asked: nothing stays in flight
        history = [*history, {"role": "assistant", "content": "답"}, {"role": "user", "content": f"{turn}번 질문"}]
        assert chooser.choose(pods, lambda _e: 0, hint(history)).name == holder.name, turn
    assert chooser.load(holder, 0) == 6 and chooser.load(holder, 0, settled=True) == 0


def test_a_conversation_queues_on_its_only_holder_rather_than_start_over() -> None:
    """A follow-up turn whose history nobody within the bound holds: its holder may go over by up to
    SLACK x the share of the prompt it holds. A single-turn prompt's holder by SINGLE_STRETCH (one request)
    only: past that a hot document spills."""
    pods = [replica(i) for i in range(4)]
    chooser = policy({p.name: reading() for p in pods})
    history = [*messages(DOC_A, "질문"), {"role": "assistant", "content": "답"}, {"role": "user", "content": "또"}]
    keys = hint(history)
    assert keys.follow_up and not hint(messages(DOC_A)).follow_up
    chooser.index.record(pods[0].name, keys.keys)
    in_flight = {pods[0].name: 3, pods[1].name: 0, pods[2].name: 0, pods[3].name: 0}
    # Bound 1.25 x 0.75 + 2 = 2.94 < 3; it holds all of the prompt: stretched to 4.94.
    assert chooser.choose(pods, lambda e: in_flight[e.name], keys).name == pods[0].name
    in_flight[pods[0].name] = 7  # past the stretch too (4.19 + 2): recomputing is now cheaper than the queue
    assert chooser.choose(pods, lambda e: in_flight[e.name], keys).name != pods[0].name
    # A single-turn prompt's holder: 3 in flight is within 2.94 + 1 x 1.0, it stays; 5 is past 3.56 + 1.
    single = hint(messages(DOC_A))
    hot = policy({p.name: reading() for p in pods})
    hot.index.record(pods[0].name, single.keys)
    in_flight[pods[0].name] = 3
    assert hot.choose(pods, lambda e: in_flight[e.name], single).name == pods[0].name
    in_flight[pods[0].name] = 5
    assert hot.choose(pods, lambda e: in_flight[e.name], single).name != pods[0].name
    # Without the stretch (the policy before #23 5a's ceiling) the holder of 3 is left.
    strict = policy({p.name: reading() for p in pods})
    strict.single_stretch = 0.0
    strict.index.record(pods[0].name, single.keys)
    in_flight[pods[0].name] = 3
    assert strict.choose(pods, lambda e: in_flight[e.name], single).name != pods[0].name


def test_a_documents_holder_is_judged_on_what_it_still_has_in_flight() -> None:
    """Questions about one document answered quickly, before any scrape: the herd count says 6 requests
    went to its holder, none of them is still there; the seventh stays (on two replicas, where the holder
    alone makes the mean, the unsettled count pushed it out: single_stretch 0, the policy before)."""
    pods = [replica(i) for i in range(2)]
    chooser = policy({p.name: reading() for p in pods})
    holder = chooser.choose(pods, lambda _e: 0, hint(messages(DOC_A, "첫 질문")))
    chooser.sent_since_scrape[holder.name] = 6
    in_flight = {p.name: 0 for p in pods}
    # Loads 6 and 0: bound 1.25 x 3 + 2 = 5.75 < 6; settled, the holder has 0.
    assert chooser.choose(pods, lambda e: in_flight[e.name], hint(messages(DOC_A, "다른 질문"))).name == holder.name
    strict = policy({p.name: reading() for p in pods})
    strict.single_stretch = 0.0
    strict.index.record(holder.name, hint(messages(DOC_A, "첫 질문")).keys)
    strict.sent_since_scrape[holder.name] = 6
    assert strict.choose(pods, lambda e: in_flight[e.name], hint(messages(DOC_A, "다른 질문"))).name != holder.name


def test_router_picks_the_model_by_weight_then_the_replica() -> None:
    router = Router(rng=random.Random(3), replicas=policy())  # noqa: S311 - reproducible choices
    gemma = [replica(i) for i in range(4)]
    exaone = [replica(i, origin="sdc/exaone") for i in range(10, 11)]
    exaone = [Endpoint(e.name, "vllm", e.base_url, "exaone", 100, namespace="sdc", origin="sdc/exaone") for e in exaone]
    picks = [router.pick([*gemma, *exaone], set()) for _ in range(2000)]
    share = sum(1 for p in picks if p is not None and p.model == "exaone") / len(picks)
    assert 0.4 < share < 0.6, "four pods of gemma do not take four fifths of the split"
    user = {router.pick([*gemma, *exaone], set(), "kim").model for _ in range(20)}
    assert len(user) == 1, "a named user stays on one model"


def test_unequal_weights_inside_a_set_keep_their_split() -> None:
    router = Router(rng=random.Random(5), replicas=policy())  # noqa: S311 - reproducible choices
    stable = [replica(i, weight=90, origin="sdc/gemma") for i in range(2)]
    canary = [replica(i, weight=10, origin="sdc/gemma-canary") for i in range(2, 4)]
    picks = [router.pick([*stable, *canary], set(), None, hint(messages(DOC_A))) for _ in range(2000)]
    share = sum(1 for p in picks if p is not None and p.origin == "sdc/gemma-canary") / len(picks)
    assert 0.05 < share < 0.15, share


def test_a_replica_gone_leaves_no_state_or_series() -> None:
    from prometheus_client import REGISTRY

    pods = [replica(i) for i in range(3)]
    chooser = policy()
    chooser.choose(pods, lambda _e: 0, hint(messages(DOC_A)))
    gone = pods[2].name
    assert REGISTRY.get_sample_value("sdc_orchestrator_replica_load", {"replica": gone}) is not None
    chooser.forget_except([p.name for p in pods[:2]])
    assert REGISTRY.get_sample_value("sdc_orchestrator_replica_load", {"replica": gone}) is None
    assert all(chooser.index.size(n) == 0 for n in [gone])
