"""Documents, their passages and vectors: an interface and an embedded store on disk.

`DocumentStore` is what an external vector database would implement later;
`DirectoryStore` keeps one JSON file per document under a directory, so a
restart keeps every document without a database to run. A write goes to a
temp file of its own (two writers of one id never share one), is fsynced, and
renamed over the old file, and the directory is fsynced: a crash leaves the old
document or the new one, never half of either. A file that does not parse is
skipped with a warning, so one corrupt document cannot stop startup.

One process owns a directory: the index lives in memory, so two replicas on
one volume would answer from different documents (the chart refuses that).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("sdc_orchestrator.rag.store")


@dataclass
class Passage:
    doc_id: str
    index: int
    text: str
    tokens: list[str] = field(default_factory=list)
    vector: list[float] | None = None
    # Kiwi morpheme ids of the passage's content words (CoNg similarity), and which analyser made
    # `tokens`/`morphs`: passages stored by another analyser version are re-analysed on load.
    morphs: list[int] = field(default_factory=list)
    analyzer: str = ""
    # What indexing needs besides the tokens, computed once by the analyser (issue #28): the normalized
    # text (its spacing-blind bigrams) and the typed details (slot -> values: the year, 4일, the revision).
    normalized: str = ""
    details: dict[str, list[str]] = field(default_factory=dict)
    # Kiwi's content morphemes of the raw text (no normalization, no joining): the plain Kiwi BM25 that the
    # reranker fuses as one more signal (issue #27), so no kind of question falls below it.
    plain: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.doc_id}#{self.index}"


@dataclass
class Document:
    id: str
    text: str
    metadata: dict[str, Any]
    passages: list[Passage]


class DocumentStore(Protocol):
    def put(self, document: Document) -> None: ...
    def delete(self, doc_id: str) -> bool: ...
    def load_all(self) -> list[Document]: ...


class MemoryStore:
    """Keeps nothing across restarts: for evaluation, benchmarks and tests of retrieval alone."""

    def __init__(self) -> None:
        self.documents: dict[str, Document] = {}

    def put(self, document: Document) -> None:
        self.documents[document.id] = document

    def delete(self, doc_id: str) -> bool:
        return self.documents.pop(doc_id, None) is not None

    def load_all(self) -> list[Document]:
        return list(self.documents.values())


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "documents"
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".*.tmp"):  # a write cut short by a crash; no writer runs yet
            leftover.unlink(missing_ok=True)

    def _path(self, doc_id: str) -> Path:
        return self.root / (hashlib.sha256(doc_id.encode()).hexdigest()[:32] + ".json")

    def put(self, document: Document) -> None:
        path = self._path(document.id)
        # Encoded piece by piece (the pure-Python encoder), not with one json.dumps: the C encoder holds the
        # GIL for the whole of a large document (seconds for megabytes on a busy machine), which would stall
        # the event loop, health checks included, while this runs in a worker thread.
        pieces = json.JSONEncoder(ensure_ascii=False).iterencode(asdict(document))
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    out.write(piece.encode())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir()

    def delete(self, doc_id: str) -> bool:
        try:
            self._path(doc_id).unlink()
        except FileNotFoundError:
            return False
        self._sync_dir()
        return True

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def load_all(self) -> list[Document]:
        docs = []
        for path in sorted(self.root.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                docs.append(Document(raw["id"], raw["text"], raw["metadata"], [Passage(**p) for p in raw["passages"]]))
            except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
                log.warning("skipping unreadable document file %s: %s: %s", path.name, type(err).__name__, err)
        return docs
