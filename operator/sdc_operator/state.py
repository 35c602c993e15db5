"""What the operator remembers between events: one `State` per process, and each LocalLLM's parsed spec.

The state lives in Kopf's operator memo (shallow-copied into every object's
memo, so all handlers share it), never in module globals; so do the settings
(`State.settings`): everything below the handlers reads them from here.
Everything runs on Kopf's event loop, so no table needs a lock of its own; the
per-LocalLLM locks serialise a reconcile against its retries.

Status and endpoint writes are coalesced per key (`Debouncer`): `refresh` and
`publish_soon` only schedule them (`refresh_now` and `publish_now`, for a model's
first ready replica, skip the wait). What the flushes do is wired in at the start
(`handlers.configure`: the status writer and the publisher); a State made alone,
as in tests of the reconciler, schedules flushes that write nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sdc_operator import metrics
from sdc_operator.builders.common import LocalLLM
from sdc_operator.builders.workload import desired_children
from sdc_operator.debounce import Debouncer
from sdc_operator.download_progress import DownloadProgress
from sdc_operator.policy import policy_errors
from sdc_operator.settings import OperatorSettings
from sdc_operator.spec import semantic_errors

Key = tuple[str, str]  # (namespace, name) of a LocalLLM
Flush = Callable[["State", Hashable], Awaitable[None]]


async def _write_nothing(state: State, key: Hashable) -> None:
    return None


@dataclass(frozen=True)
class SpecView:
    """One generation of a LocalLLM as the operator reads it: parsed, checked, and its children built."""

    version: tuple[str, int]  # uid, generation: the spec changes only with them
    llm: LocalLLM | None
    errors: list[str]
    desired: list[dict[str, Any]]  # read-only: shared by every caller until the next generation


@dataclass
class State:
    """Everything the operator remembers between events; one per process, kept in Kopf's memo."""

    settings: OperatorSettings = field(default_factory=OperatorSettings)
    flush_status: Flush = _write_nothing  # the status writer's flush (wired by handlers.configure)
    flush_publish: Flush = _write_nothing  # the publisher's flush (likewise)
    indexes: dict[str, Any] = field(default_factory=dict)
    last_status: dict[Key, dict[str, Any]] = field(default_factory=dict)  # what we last wrote
    apply_errors: dict[Key, str] = field(default_factory=dict)
    reference_errors: dict[Key, list[str]] = field(default_factory=dict)  # Secrets/claims not opened to it
    conflicts: dict[Key, list[str]] = field(default_factory=dict)
    last_event_phase: dict[Key, str] = field(default_factory=dict)
    phase: dict[Key, str] = field(default_factory=dict)  # the phase counted in the models gauge
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    written: dict[Key, tuple[dict[str, Any], str]] = field(default_factory=dict)  # status, resourceVersion seen
    retries: dict[Key, asyncio.Task[None]] = field(default_factory=dict)  # failed reconciles being retried
    handled: dict[Key, tuple[str, int]] = field(default_factory=dict)  # uid, generation last reconciled
    downloads: dict[Key, DownloadProgress] = field(default_factory=dict)  # running downloads' newest progress
    # UIDs of children this operator deleted itself (pruned): their DELETED events are no hand deletion.
    pruned: dict[Key, set[str]] = field(default_factory=dict)
    # The parsed spec and desired children of each LocalLLM's current generation: every child event's drift
    # check and every status computation needs them, and they change only with the spec.
    specs: dict[Key, SpecView] = field(default_factory=dict)
    published: str | None = None
    published_known: bool = False
    status_debouncer: Debouncer = field(init=False)
    publish_debouncer: Debouncer = field(init=False)
    # Service creations wait on the API server's ClusterIP allocation, which runs about one at a time: a
    # few at once keep its pace, while hundreds would hold every API thread and starve the Deployments.
    service_creations: asyncio.Semaphore = field(init=False)
    status_writes: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.service_creations = asyncio.Semaphore(s.service_creation_concurrency)
        self.status_writes = asyncio.Semaphore(s.status_write_concurrency)
        self.status_debouncer = Debouncer(
            s.status_debounce_s, lambda key: self.flush_status(self, key), s.status_min_interval_s
        )
        self.publish_debouncer = Debouncer(s.status_debounce_s, lambda key: self.flush_publish(self, key))

    def lock(self, key: Key) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def refresh(self, key: Key) -> None:
        """Schedule a status recomputation; bursts of child events collapse into one write."""
        self.status_debouncer.trigger(key)

    def refresh_now(self, key: Key) -> None:
        """Recompute and write the status at once (a model's first ready replica: `triggers.first_replica_ready`)."""
        self.status_debouncer.trigger_now(key)

    def publish_soon(self) -> None:
        """Schedule a write of the endpoints ConfigMap (coalesced; written only when its content changes)."""
        self.publish_debouncer.trigger("endpoints")

    def publish_now(self) -> None:
        """Write the endpoints ConfigMap at once: a model just became publishable (`triggers.serving_began`),
        and requests held for it (scale from zero) wait on this write."""
        self.publish_debouncer.trigger_now("endpoints")

    def forget(self, key: Key) -> None:
        """A deleted LocalLLM leaves no state behind in this process."""
        phase = self.phase.pop(key, None)
        if phase is not None:
            metrics.MODELS.labels(phase).dec()
        for table in (
            self.last_status,
            self.apply_errors,
            self.reference_errors,
            self.conflicts,
            self.last_event_phase,
            self.locks,
            self.written,
            self.handled,
            self.specs,
            self.downloads,
            self.pruned,
        ):
            table.pop(key, None)
        if (task := self.retries.pop(key, None)) is not None:
            task.cancel()


def spec_version(meta: dict[str, Any]) -> tuple[str, int]:
    """(uid, generation): a LocalLLM's spec changes only with one of them."""
    return str(meta.get("uid") or ""), int(meta.get("generation") or 0)


def _parse(body: dict[str, Any], settings: OperatorSettings) -> tuple[LocalLLM | None, list[str]]:
    try:
        llm = LocalLLM.from_body(body)
    except ValidationError as err:
        return None, [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
    return llm, semantic_errors(llm.spec) + policy_errors(llm.spec, settings)


def spec_view(state: State, body: dict[str, Any]) -> SpecView:
    """The body's spec parsed and built once per generation (cached per LocalLLM)."""
    meta = body["metadata"]
    key = (str(meta["namespace"]), str(meta["name"]))
    version = spec_version(meta)
    view = state.specs.get(key)
    if view is None or view.version != version:
        llm, errors = _parse(body, state.settings)
        desired = desired_children(llm, state.settings) if llm is not None and not errors else []
        view = state.specs[key] = SpecView(version, llm, errors, desired)
    return view
