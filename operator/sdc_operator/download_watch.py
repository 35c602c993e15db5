"""Download progress into the LocalLLM status: the running download steps' newest log line, every few seconds.

A background task of the operator (started with it, no Kopf timer: a timer
would put Kopf's finalizer on pods we do not create). Each round it finds,
in the pod index the handlers keep, the pods whose download init container
is running, reads the tail of that container's log (RBAC: `pods/log` get, read
only), and when the progress moved stores it for the status writer and asks
for a status write (debounced like every other). Nothing is written when
nothing downloads. A log that cannot be read leaves the status as it was
(the phase and "downloading the model (since ...)" still come from the pod).
With several operator replicas, only the one Kopf's peering leaves active reads
and writes progress (a paused replica's handlers write nothing either).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sdc_operator import kube
from sdc_operator.builders.download import DOWNLOAD_CONTAINER
from sdc_operator.builders.ollama import FETCH_CONTAINER
from sdc_operator.download_progress import DownloadProgress, latest
from sdc_operator.peering import outranked

log = logging.getLogger("sdc_operator.download_watch")
Key = tuple[str, str]
TAIL_LINES = 20  # the fetcher prints a progress line every 2 s: the newest is within the last few
TAIL_BYTES = 16 * 1024
# The init containers that print progress lines: sdc-fetch-model (Hugging Face runtimes) and sdc-fetch-url
# (Ollama's model.url). Ollama's own pull/import step prints none.
PROGRESS_CONTAINERS = (DOWNLOAD_CONTAINER, FETCH_CONTAINER)
_warned: set[Key] = set()  # (namespace, pod) whose log could not be read, warned about once


def running_downloads(pods_by_key: Iterable[tuple[Key, list[dict[str, Any]]]]) -> dict[Key, tuple[str, str]]:
    """Per LocalLLM, one pod and container whose download step is running now (the last by name)."""
    out: dict[Key, tuple[str, str]] = {}
    for key, pods in pods_by_key:
        for pod in sorted(pods, key=lambda p: str(p.get("metadata", {}).get("name") or "")):
            if pod.get("metadata", {}).get("deletionTimestamp"):
                continue
            for status in pod.get("status", {}).get("initContainerStatuses") or []:
                if status.get("name") in PROGRESS_CONTAINERS and "running" in (status.get("state") or {}):
                    out[key] = (str(pod["metadata"]["name"]), str(status["name"]))
    return out


async def poll_once(
    pods_by_key: Iterable[tuple[Key, list[dict[str, Any]]]],
    progress: dict[Key, DownloadProgress],
    refresh: Callable[[Key], None],
) -> None:
    """One round: read each running download's log tail, keep what moved, forget what ended."""
    running = running_downloads(pods_by_key)
    for key in [k for k in progress if k not in running]:
        del progress[key]  # the download ended (or its pod went): the status no longer shows progress
    _warned.intersection_update((key[0], pod) for key, (pod, _) in running.items())  # ended pods: forgotten
    for key, (pod, container) in running.items():
        try:
            tail = await kube.pod_log_tail(key[0], pod, container, lines=TAIL_LINES, limit_bytes=TAIL_BYTES)
        except kube.ApiError as err:  # said once per pod: a missing pods/log grant would otherwise be silent
            if (key[0], pod) not in _warned:
                _warned.add((key[0], pod))
                log.warning("cannot read the download log of %s/%s (progress not shown): %s", key[0], pod, err)
            continue
        reading = latest(tail)
        if reading is not None and reading != progress.get(key):
            progress[key] = reading
            refresh(key)


def pods_by_key(index: Any) -> list[tuple[Key, list[dict[str, Any]]]]:
    """A Kopf index of pods (key -> store of projections) as plain pairs."""
    if not index:
        return []
    return [(key, list(store)) for key, store in list(index.items())]


async def watch_downloads(
    indexes: dict[str, Any],
    progress: dict[Key, DownloadProgress],
    refresh: Callable[[Key], None],
    interval_s: float,
    active: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Forever: a round every `interval_s` (the operator cancels it at shutdown). `active` (with peering)
    says whether this replica is the one that acts; it is asked only while something downloads."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            pods = pods_by_key(indexes.get("pod_index"))
            if active is not None and running_downloads(pods) and not await active():
                progress.clear()  # the active replica reports progress; ours would go stale
                continue
            await poll_once(pods, progress, refresh)
        except Exception:  # a round that fails must not end the task: the next one tries again
            log.exception("download progress round failed")


async def peering_active(name: str, namespaces: list[str], priority: int) -> bool:
    """This replica is not outranked by a live peer in the peering object(s). An unreadable object
    counts as active: the status writes would fail the same way, and Kopf itself pauses on a clash."""
    try:
        peers = await kube.peering_status(name, namespaces)
    except kube.ApiError:
        return True
    return not outranked(peers, priority, datetime.datetime.now(datetime.UTC))
