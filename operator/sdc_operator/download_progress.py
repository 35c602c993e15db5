"""A model download's progress, read from the newest progress line of `sdc-fetch-model`'s log.

Pure: log text in, `DownloadProgress` out, and the sentence the status shows.
The fetcher prints one JSON line every few seconds while bytes arrive (see
runtime/sdc_runtime/fetch.py); only the last well-formed one counts, and every
number is checked, since a log is the pod's words, not ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# Larger than any model a cache can hold (a petabyte), so a corrupt line cannot make the status absurd.
MAX_BYTES = 1 << 50
MAX_FILES = 1_000_000
MAX_ETA_S = 30 * 24 * 3600


@dataclass(frozen=True)
class DownloadProgress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    percent: float
    eta_seconds: int | None = None


def _count(line: dict[str, object], key: str, limit: int) -> int | None:
    value = line.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        return None
    return value


def parse_line(text: str) -> DownloadProgress | None:
    """One log line as progress, or None when it is not a sane progress line."""
    try:
        line = json.loads(text)
    except ValueError:
        return None
    if not isinstance(line, dict) or line.get("event") != "progress":
        return None
    done, total = _count(line, "bytes_done", MAX_BYTES), _count(line, "bytes_total", MAX_BYTES)
    files_done, files_total = _count(line, "files_done", MAX_FILES), _count(line, "files_total", MAX_FILES)
    if done is None or total is None or files_done is None or files_total is None:
        return None
    if done > total or files_done > files_total:
        return None
    percent = round(100 * done / total, 1) if total else 100.0
    return DownloadProgress(done, total, files_done, files_total, percent, _count(line, "eta_seconds", MAX_ETA_S))


def latest(log_tail: str) -> DownloadProgress | None:
    """The newest progress line of a log tail (other lines and a line cut at the tail's start are skipped)."""
    for text in reversed(log_tail.strip().splitlines()):
        if (progress := parse_line(text.strip())) is not None:
            return progress
    return None


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"  # pragma: no cover - the loop returns at TB


def human_duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def describe(progress: DownloadProgress) -> str:
    """The status message while downloading, e.g. "downloading the model: 43.7 % (31.5 MB of 72.0 MB, 1 of 4
    files), about 5 s left"."""
    text = (
        f"downloading the model: {progress.percent:g} % ({human_bytes(progress.bytes_done)} of "
        f"{human_bytes(progress.bytes_total)}, {progress.files_done} of {progress.files_total} files)"
    )
    if progress.eta_seconds is not None:
        text += f", about {human_duration(progress.eta_seconds)} left"
    return text
