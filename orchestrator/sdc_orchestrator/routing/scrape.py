"""Engine signals: each replica's /metrics, read about once a second, in vLLM's metric names.

The model-server protocol's names (vLLM's, which sdc-runtime exports too):
queue (`vllm:num_requests_waiting`), running batch (`vllm:num_requests_running`),
KV-cache use (`vllm:kv_cache_usage_perc`, 0..1) and the prefix-cache counters.
One aiohttp session for every scrape (the orchestrator's HTTP client: the
request path's reasons for aiohttp over httpx hold here too, and it adds no
dependency), short timeouts, a bounded number in flight.

A vLLM /metrics page is tens of kilobytes of histograms; only the lines of the
five names are handed to prometheus_client's parser, so scraping 32 replicas a
second costs the event loop a few milliseconds, not hundreds.

A replica whose metrics cannot be read keeps being routed to, scored on the
router's own in-flight count (policy.py): `signals()` drops readings older
than STALE_S, and every failure is counted in a metric and logged once per
replica until it recovers, never silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sdc_orchestrator.routing import metrics

log = logging.getLogger("sdc_orchestrator.routing.scrape")
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"
NAMES = (WAITING, RUNNING, KV_USAGE, PREFIX_QUERIES, PREFIX_HITS)
STALE_S = 3.0
MAX_PAGE_BYTES = 4 << 20  # vLLM's page is tens to hundreds of kB; a larger one is not an engine's, and not read


@dataclass(frozen=True)
class Signals:
    """One replica's engine as its last readable /metrics page showed it."""

    waiting: float
    running: float
    kv_usage: float
    prefix_queries: float
    prefix_hits: float
    at: float  # monotonic time of the reading


def parse(text: str, at: float) -> Signals:
    """The five values from a Prometheus text page (summed over label sets: one engine may serve several
    model names); a name the page lacks reads 0. Raises ValueError on a page that is not the text format."""
    wanted = [line for line in text.splitlines() if line.startswith(NAMES)]
    totals = dict.fromkeys(NAMES, 0.0)
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in totals:
                totals[name] += float(sample.value)
    return Signals(totals[WAITING], totals[RUNNING], totals[KV_USAGE], totals[PREFIX_QUERIES], totals[PREFIX_HITS], at)


class Scraper:
    """Reads every replica's metrics page on a fixed period; `signals(name)` is the latest fresh reading."""

    def __init__(
        self,
        interval_s: float = 1.0,
        timeout_s: float = 0.5,
        concurrency: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.clock = clock
        self._latest: dict[str, Signals] = {}
        self._failing: set[str] = set()
        self._errored: set[str] = set()  # replicas with an error series (removed when the replica goes)
        self._session: aiohttp.ClientSession | None = None
        self.on_reading: Callable[[str], None] | None = None  # the router resets its since-scrape counts

    def signals(self, name: str) -> Signals | None:
        reading = self._latest.get(name)
        if reading is None or self.clock() - reading.at > STALE_S:
            return None
        return reading

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            connector = aiohttp.TCPConnector(limit=self.concurrency, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        return self._session

    async def scrape_one(self, name: str, url: str) -> None:
        try:
            async with self._http().get(url) as resp:
                resp.raise_for_status()
                chunks, size = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_PAGE_BYTES:
                        raise ValueError(f"the page is larger than {MAX_PAGE_BYTES} bytes")
                    chunks.append(chunk)
            reading = parse(b"".join(chunks).decode("utf-8", errors="replace"), self.clock())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
            metrics.SCRAPE_ERRORS.labels(name).inc()
            self._errored.add(name)
            if name not in self._failing:
                self._failing.add(name)
                log.warning("metrics of %s unreadable (%s); scoring it on the router's own counts", name, err)
            return
        if name in self._failing:
            self._failing.discard(name)
            log.info("metrics of %s readable again", name)
        self._latest[name] = reading
        if self.on_reading is not None:
            self.on_reading(name)

    async def scrape_all(self, targets: Iterable[tuple[str, str]]) -> None:
        """One round: every (name, metrics URL), at most `concurrency` at once; forgets replicas gone."""
        targets = list(targets)
        live = {name for name, _ in targets}
        for gone in [n for n in self._latest if n not in live]:
            del self._latest[gone]
        self._failing &= live
        for gone in self._errored - live:
            metrics.SCRAPE_ERRORS.remove(gone)
        self._errored &= live
        slots = asyncio.Semaphore(self.concurrency)

        async def one(name: str, url: str) -> None:
            async with slots:
                await self.scrape_one(name, url)

        await asyncio.gather(*(one(name, url) for name, url in targets))

    async def run(self, targets: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Scrape forever (until cancelled), one round per interval; a slow round delays the next, never
        overlaps it."""
        while True:
            started = self.clock()
            try:
                await self.scrape_all(targets())
            except Exception:  # a bug in one round must not end scraping for good
                log.exception("a scrape round failed")
            await asyncio.sleep(max(0.05, self.interval_s - (self.clock() - started)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
