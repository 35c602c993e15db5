"""The directory document store: concurrent writers lose nothing, temp files are unique, corrupt files are skipped."""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path

import pytest
from sdc_orchestrator.rag import store as store_module
from sdc_orchestrator.rag.store import DirectoryStore, Document, Passage


def doc(doc_id: str, text: str) -> Document:
    return Document(doc_id, text, {"n": len(text)}, [Passage(doc_id, 0, text, ["t"])])


def test_concurrent_writers_of_the_same_ids_lose_nothing(tmp_path: Path) -> None:
    # Two stores on one directory: the case that lost 4 of 300 uploads with a fixed temp name per id.
    a, b = DirectoryStore(tmp_path), DirectoryStore(tmp_path)
    jobs = [(s, f"doc-{i % 30}", f"본문 {i}") for i in range(300) for s in (a, b)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: job[0].put(doc(job[1], job[2])), jobs))
    loaded = {d.id: d for d in DirectoryStore(tmp_path).load_all()}
    assert set(loaded) == {f"doc-{i}" for i in range(30)}
    assert not list((tmp_path / "documents").glob("*.tmp")), "no temp file left behind"


def test_writes_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    monkeypatch.setattr(store_module.os, "replace", replace)
    DirectoryStore(tmp_path).put(doc("a", "x"))
    assert calls == ["fsync", "replace", "fsync"], "file synced, renamed, then the directory synced"


def test_a_corrupt_file_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DirectoryStore(tmp_path)
    store.put(doc("good", "서울"))
    (tmp_path / "documents" / "broken.json").write_text('{"id": "half", "text": ')
    (tmp_path / "documents" / "wrong.json").write_text('{"id": "x"}')
    (tmp_path / "documents" / ".leftover.tmp").write_text("partial")
    with caplog.at_level(logging.WARNING):
        docs = DirectoryStore(tmp_path).load_all()
    assert [d.id for d in docs] == ["good"]
    assert "broken.json" in caplog.text and "wrong.json" in caplog.text
    assert not (tmp_path / "documents" / ".leftover.tmp").exists(), "a crashed write's temp file is cleaned up"


def test_delete_is_idempotent(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    store.put(doc("a", "x"))
    assert store.delete("a") is True
    assert store.delete("a") is False
