"""Documents, their passages and vectors: an interface and an embedded store on disk.

`DocumentStore` is what an external vector database would implement later;
`DirectoryStore` keeps one JSON file per document under a directory (written
atomically), so a restart keeps every document without a database to run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


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

    def _path(self, doc_id: str) -> Path:
        return self.root / (hashlib.sha256(doc_id.encode()).hexdigest()[:32] + ".json")

    def put(self, document: Document) -> None:
        path = self._path(document.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(document), ensure_ascii=False))
        os.replace(tmp, path)

    def delete(self, doc_id: str) -> bool:
        path = self._path(doc_id)
        if not path.exists():
            return False
        path.unlink()
        return True

    def load_all(self) -> list[Document]:
        docs = []
        for path in sorted(self.root.glob("*.json")):
            raw = json.loads(path.read_text())
            docs.append(Document(raw["id"], raw["text"], raw["metadata"], [Passage(**p) for p in raw["passages"]]))
        return docs
