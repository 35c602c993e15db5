"""Reading a download's progress out of sdc-fetch-model's log lines: table tests, hostile lines included."""

from __future__ import annotations

import json

import pytest
from sdc_operator.download_progress import DownloadProgress, describe, latest, parse_line


def line(**fields: object) -> str:
    base: dict[str, object] = {
        "event": "progress",
        "files_done": 1,
        "files_total": 4,
        "bytes_done": 31_457_319,
        "bytes_total": 72_000_039,
        "percent": 43.7,
        "bytes_per_second": 8_473_172,
        "eta_seconds": 5,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (line(), DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, 5)),
        (line(eta_seconds=None), DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, None)),
        # The percent is recomputed from the bytes, not trusted.
        (line(percent=99.9), DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, 5)),
        (line(bytes_total=0, bytes_done=0), DownloadProgress(0, 0, 1, 4, 100.0, 5)),
        (line(event="done"), None),
        (line(bytes_done=-1), None),
        (line(bytes_done=10**30), None),
        (line(bytes_done=100, bytes_total=10), None),
        (line(files_done=5), None),
        (line(files_total="4"), None),
        (line(bytes_done=True), None),
        (line(eta_seconds=-3), DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, None)),
        ('{"event": "progress", "bytes_done": 1', None),
        ("[1, 2]", None),
        ("downloading...", None),
    ],
)
def test_parse_line(text: str, want: DownloadProgress | None) -> None:
    assert parse_line(text) == want


def test_latest_takes_the_newest_sane_progress_line() -> None:
    tail = "\n".join(
        [
            'ress", "bytes_done": 1}',  # the tail cut a line at its start
            line(bytes_done=1_000, files_done=0),
            line(bytes_done=2_000, files_done=0),
            "a warning from the hub client",
            line(bytes_done=10**30),  # not sane: skipped, the one before counts
        ]
    )
    progress = latest(tail)
    assert progress is not None and progress.bytes_done == 2_000
    assert latest("") is None and latest("no progress here\n") is None


@pytest.mark.parametrize(
    ("progress", "want"),
    [
        (
            DownloadProgress(31_457_319, 72_000_039, 1, 4, 43.7, 5),
            "downloading the model: 43.7 % (31.5 MB of 72.0 MB, 1 of 4 files), about 5 s left",
        ),
        (
            DownloadProgress(5_000_000_000, 18_500_000_000, 2, 9, 27.0, 5_400),
            "downloading the model: 27 % (5.0 GB of 18.5 GB, 2 of 9 files), about 1 h 30 min left",
        ),
        (DownloadProgress(512, 1_000, 0, 2, 51.2), "downloading the model: 51.2 % (512 B of 1.0 kB, 0 of 2 files)"),
        (
            DownloadProgress(1, 2, 0, 1, 50.0, 125),
            "downloading the model: 50 % (1 B of 2 B, 0 of 1 files), about 2 min left",
        ),
    ],
)
def test_describe(progress: DownloadProgress, want: str) -> None:
    assert describe(progress) == want


def _pod(name: str, state: str, container: str = "model-download", deleting: bool = False) -> dict[str, object]:
    meta: dict[str, object] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"initContainerStatuses": [{"name": container, "state": {state: {}}}]}}


def test_running_downloads_picks_one_pod_per_model_whose_download_runs() -> None:
    from sdc_operator.download_watch import running_downloads

    got = running_downloads(
        [
            (("ns", "a"), [_pod("a-1", "terminated"), _pod("a-2", "running")]),
            (("ns", "b"), [_pod("b-1", "waiting")]),
            (("ns", "c"), [_pod("c-1", "running", container="model-fetch")]),  # Ollama's model.url fetch
            (("ns", "f"), [_pod("f-1", "running", container="ollama-import")]),
            (("ns", "d"), [_pod("d-1", "running", deleting=True)]),
            (("ns", "e"), [{"metadata": {"name": "e-1"}, "status": {}}]),
        ]
    )
    assert got == {("ns", "a"): ("a-2", "model-download"), ("ns", "c"): ("c-1", "model-fetch")}


def test_a_replica_peering_pauses_neither_reads_logs_nor_keeps_progress() -> None:
    """With a live higher-priority peer the watcher drops what it held and asks for no status write
    (no log is read: nothing here answers one, so a read would log a failed round instead)."""
    import asyncio

    from sdc_operator import download_watch

    pods = {("ns", "a"): [_pod("a-1", "running")]}
    progress = {("ns", "a"): DownloadProgress(bytes_done=1, bytes_total=2, files_done=0, files_total=1, percent=50.0)}
    refreshed: list[object] = []
    asked: list[bool] = []

    async def paused() -> bool:
        asked.append(True)
        return False

    async def scenario() -> None:
        task = asyncio.create_task(
            download_watch.watch_downloads({"pod_index": pods}, progress, refreshed.append, 0.01, paused)
        )
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    assert asked, "the watcher asks whether it is the active replica while a download runs"
    assert progress == {} and refreshed == []


def test_warnings_about_unreadable_logs_are_forgotten_with_their_pods() -> None:
    import asyncio

    from sdc_operator import download_watch

    download_watch._warned.update({("ns", "gone-1"), ("ns", "gone-2")})
    asyncio.run(download_watch.poll_once([(("ns", "b"), [_pod("b-1", "waiting")])], {}, lambda key: None))
    assert not {("ns", "gone-1"), ("ns", "gone-2")} & download_watch._warned
