"""How long models take to download and to load, from what pods already report.

No sidecar and no cooperation from the engine: a pod's status says when its
download init container started and finished, when the engine container
started and when the pod became Ready. The difference is the download
duration and the model load time (weights read, CUDA graphs captured, probe
passed). Each pod is observed once per measure (a bounded memory of pod uids),
so the many events a pod produces count once. `durations` is pure; `observe`
feeds the histograms.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

from prometheus_client import Histogram

from sdc_operator.builders.download import DOWNLOAD_CONTAINER
from sdc_operator.builders.observability import RUNTIME_LABEL

BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
DOWNLOAD = Histogram("sdc_operator_model_download_seconds", "Model download time per pod", ["runtime"], buckets=BUCKETS)
LOAD = Histogram("sdc_operator_model_load_seconds", "Engine start to pod Ready", ["runtime"], buckets=BUCKETS)
_seen: OrderedDict[tuple[str, str], None] = OrderedDict()
MAX_SEEN = 10000


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _span(start: Any, end: Any) -> float | None:
    a, b = _time(start), _time(end)
    return (b - a).total_seconds() if a and b and b >= a else None


def durations(pod: dict[str, Any]) -> dict[str, float]:
    """{"download": s, "load": s} for what this pod's status can already tell."""
    status = pod.get("status") or {}
    out: dict[str, float] = {}
    for init in status.get("initContainerStatuses") or []:
        done = (init.get("state") or {}).get("terminated") or {}
        span = _span(done.get("startedAt"), done.get("finishedAt"))
        if init.get("name") == DOWNLOAD_CONTAINER and done.get("exitCode") == 0 and span is not None:
            out["download"] = span
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    main = (status.get("containerStatuses") or [{}])[0]
    started = ((main.get("state") or {}).get("running") or {}).get("startedAt")
    if (
        ready
        and ready.get("status") == "True"
        and (span := _span(started, ready.get("lastTransitionTime"))) is not None
    ):
        out["load"] = span
    return out


def observe(pod: dict[str, Any]) -> None:
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    if not uid:
        return
    runtime = str(((pod.get("metadata") or {}).get("labels") or {}).get(RUNTIME_LABEL, "unknown"))
    for kind, seconds in durations(pod).items():
        if (uid, kind) in _seen:
            continue
        _seen[(uid, kind)] = None
        while len(_seen) > MAX_SEEN:
            _seen.popitem(last=False)
        (DOWNLOAD if kind == "download" else LOAD).labels(runtime).observe(seconds)
