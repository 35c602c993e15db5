"""Which replica of a model serves a request: prefix affinity, bounded by load.

Engines answer a prompt whose leading blocks they have cached without
recomputing them (prefill is most of the time to first token for a RAG
prompt), so the best replica is the one that holds the longest prefix of the
prompt. Affinity alone herds: a hot prefix (one popular document, one system
prompt) sends every request to one pod while the others idle, and in llm-d's
own test 55 % of requests succeeded that way. So every choice is bounded by
load, as in consistent hashing with bounded loads (Mirrokni et al.; KubeAI):

1. Each replica's load is its engine's queue, running batch and KV-cache use
   from the last scrape (scrape.py), plus the requests this router sent it
   since that scrape (herd protection: a burst between two scrapes sees
   its own effect at once), and never less than the router's own in-flight
   count. A replica without a fresh reading is scored on the in-flight count
   alone: still routed to, never dropped.
2. The bound is (1 + EPSILON) x the mean load + SLACK. Among the replicas
   within it, the one with the longest cached prefix wins ("affinity");
   equal matches go to the less loaded, then by chance. A request whose
   prompt no replica within the bound holds may still go to the replica
   that holds most of it, up to a stretch x that share over the bound (its
   load counted without the requests it already answered since the scrape):
   a conversation's follow-up turn (an assistant message in its history) by
   SLACK, any other request by SINGLE_STRETCH, one request. A few requests
   queued there cost less than recomputing the whole prompt elsewhere and
   keeping a second copy of it, which evicts other prompts.
3. No replica within the bound holds any of the prompt: a prefix nobody has
   yet goes by rendezvous hashing of its first block to the first replica in
   its order within the bound ("hash"), so concurrent first requests of a
   new prefix, from this or another orchestrator, meet on one pod.
4. Otherwise (the prefix's holder is over the bound, or no prompt text at
   all) the least-loaded replica, ties broken at random ("load").

The chosen replica's index then records the prompt's blocks (prefix_index.py).
A decision costs tens of microseconds at 8 replicas (benchmarks/route_decision.py).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sdc_orchestrator.backends import Endpoint
from sdc_orchestrator.routing import metrics
from sdc_orchestrator.routing.prefix_index import PrefixIndex, block_keys, render, stable_key
from sdc_orchestrator.routing.scrape import Scraper

EPSILON = 0.25
SLACK = 2.0  # requests: at low load (mean 0 or 1) affinity should still win over a one-request difference
KV_WEIGHT = 2.0  # a full KV cache counts as two more requests: the engine is about to queue or preempt
# A single-turn prompt's holder may be this many requests (x the share of the prompt it holds) over the bound.
# Less than a follow-up's SLACK: many requests of one hot document can be in flight at once, and past one
# request's worth of queue it is better spilled (its prefix then lives on a second replica). On two vLLM
# replicas whose caches hold about half of 24 documents (#23 5a, simulated: vllm_prefix_ceiling.py), leaving
# the holder over a queue that had already been answered cost 0.013 of hit rate and 38 ms of TTFT p90.
SINGLE_STRETCH = 1.0


@dataclass(frozen=True)
class Hint:
    """What the policy knows of a request: its prompt's block keys, its first block's stable hash, and
    whether it continues a conversation (an assistant turn in its messages)."""

    keys: tuple[int, ...] = ()
    stable: str | None = None
    follow_up: bool = False


def hint(messages: object) -> Hint:
    text = render(messages)
    if not text:
        return Hint()
    follow_up = isinstance(messages, list) and any(
        isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages
    )
    return Hint(block_keys(text), stable_key(text), follow_up)


@dataclass
class ReplicaPolicy:
    scraper: Scraper = field(default_factory=Scraper)
    index: PrefixIndex = field(default_factory=PrefixIndex)
    rng: random.Random = field(default_factory=random.Random)
    epsilon: float = EPSILON
    slack: float = SLACK
    single_stretch: float = SINGLE_STRETCH
    sent_since_scrape: dict[str, int] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)  # replicas with a load gauge series, removed when they go

    def __post_init__(self) -> None:
        self.scraper.on_reading = self._scraped

    def _scraped(self, name: str) -> None:
        self.sent_since_scrape.pop(name, None)

    def load(self, endpoint: Endpoint, in_flight: int, settled: bool = False) -> float:
        """The replica's load in requests. `settled`: count only the requests sent since the scrape that may
        still be there (at most the router's in-flight count), not every one sent."""
        reading = self.scraper.signals(endpoint.name) if endpoint.metrics_url else None
        if reading is None:
            return float(in_flight)
        since = self.sent_since_scrape.get(endpoint.name, 0)
        if settled:
            since = min(since, in_flight)
        requests = max(float(in_flight), reading.running + reading.waiting + since)
        return requests + reading.waiting + KV_WEIGHT * reading.kv_usage  # a waiting request counts twice

    def choose(self, replicas: Sequence[Endpoint], in_flight: Callable[[Endpoint], int], request: Hint) -> Endpoint:
        """One of `replicas` (two or more) for this request; records the choice (index, herd counts, metrics)."""
        loads = [self.load(e, in_flight(e)) for e in replicas]
        bound = (1 + self.epsilon) * (sum(loads) / len(loads)) + self.slack
        within = [i for i, load in enumerate(loads) if load <= bound]  # never empty: the least loaded is in
        keys = request.keys
        matches = [self.index.match(e.name, keys) for e in replicas] if keys else [0] * len(replicas)
        best = max((matches[i] for i in within), default=0)
        if best == 0 and (request.follow_up or self.single_stretch > 0) and any(matches):
            # A prompt whose prefix no replica within the bound holds: leaving its holder means computing all
            # of it again (and a second copy in another cache), so the holder may go over the bound in
            # proportion to the share of the prompt it holds: by up to `slack` requests for a conversation's
            # next turn (one request in flight at a time per conversation, so the stretch stays bounded), by
            # `single_stretch` for any other (a hot document has many requests at once: past that it is
            # better spilled, which puts its prefix on a second replica; 0 turns this off for them). The
            # holder's load is judged settled: the requests it was sent since the scrape include answered
            # ones (a conversation's own earlier turns, a document's earlier questions), which the herd count
            # would still hold against it for up to a second.
            holder = max(range(len(replicas)), key=lambda i: (matches[i], -loads[i]))
            settled = self.load(replicas[holder], in_flight(replicas[holder]), settled=True)
            stretch = self.slack if request.follow_up else self.single_stretch
            if settled <= bound + stretch * matches[holder] / len(keys):
                within, best = [*within, holder], matches[holder]
        if best > 0:
            chosen = min((i for i in within if matches[i] == best), key=lambda i: (loads[i], self.rng.random()))
            reason = "affinity"
        elif request.stable is not None and not any(matches):
            order = sorted(within, key=lambda i: _rendezvous(request.stable or "", replicas[i].name))
            chosen, reason = order[0], "hash"
        else:
            chosen = min(range(len(replicas)), key=lambda i: (loads[i], self.rng.random()))
            reason = "load"
        endpoint = replicas[chosen]
        metrics.DECISIONS.labels(reason).inc()
        for e, load in zip(replicas, loads, strict=True):
            metrics.REPLICA_LOAD.labels(e.name).set(load)
            self.labelled.add(e.name)
        if keys:
            metrics.PREFIX_BLOCKS.labels("hit").inc(matches[chosen])
            metrics.PREFIX_BLOCKS.labels("miss").inc(len(keys) - matches[chosen])
            self.index.record(endpoint.name, keys)
        self.sent_since_scrape[endpoint.name] = self.sent_since_scrape.get(endpoint.name, 0) + 1
        return endpoint

    def forget_except(self, names: Sequence[str]) -> None:
        """Drop the state of replicas no longer published (pods come and go: their series must too)."""
        self.index.keep_only(names)
        live = set(names)
        for gone in [n for n in self.sent_since_scrape if n not in live]:
            del self.sent_since_scrape[gone]
        for gone in self.labelled - live:
            metrics.REPLICA_LOAD.remove(gone)
        self.labelled &= live


def _rendezvous(key: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{key}\x00{replica}".encode(), digest_size=8).digest()
