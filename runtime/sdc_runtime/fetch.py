"""`sdc-fetch-model`: put a pinned model snapshot into the model cache, once.

The operator's download step runs this in the model's namespace, before any
serving pod starts. It refuses sources outside the allow-list and unpinned
revisions, and fetches only what its gate lets through: exact configuration
and tokenizer file names and safetensors (pickled weights and repository code
only when asked for). Every file it keeps is verified against the hub's
listing (sha256 for LFS files, the git blob id for the rest), files kept from
an earlier try included, and the whole snapshot must fit the cache
(`--max-bytes`). A completion marker records each file's size and hash, so the
next pod on the same cache skips the download; a marker that does not vouch
for this exact repository and revision is ignored and the cache re-verified.
Files come down in parallel (`--parallel`, four by default: one connection per
file, as the hub's own snapshot download does). Progress goes to stdout as JSON
lines: a `progress` line every few seconds while bytes arrive (bytes, percent,
rate and an estimate of the time left, counting the partial files of the
downloads in flight) and a final summary. The operator reads the newest
progress line from this container's log into the LocalLLM's status; the last
line is also written to the termination log, where it reads failures."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".sdc-complete.json"
MARKER_VERSION = 2
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Exact file names of configuration and tokenizer data (never a glob such as `tokenizer*`, which also
# matches tokenizer_helper.py or tokenizer.pkl), plus safetensors weights. All of these are data.
DATA_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.tiktoken",
        "preprocessor_config.json",
        "chat_template.jinja",
        "chat_template.json",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
    }
)
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CODE_SUFFIXES = (".py",)


class FetchError(Exception):
    """A refusal or failure; the message says what to change."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files: the hub lists their sha256
    blob_id: str | None = None  # other files: the git blob id (sha1 of "blob <size>\0" + content)


def cache_path(cache: Path, repo: str, revision: str) -> Path:
    """Where a snapshot lives in the cache: one folder per repository and revision."""
    return cache / "hf" / repo / revision


def check_allowed(repo: str, allow: list[str]) -> None:
    if not REPO_RE.match(repo):
        raise FetchError(f"'{repo}' is not a Hugging Face repository id (owner/name)")
    if not any(fnmatch.fnmatchcase(repo, pattern) for pattern in allow):
        raise FetchError(f"source '{repo}' is not in the allow-list ({', '.join(allow) or 'empty'})")


def wanted(name: str, allow_pickle: bool, trust_remote_code: bool) -> bool:
    """The fetcher's gate: exact data file names and safetensors; pickles and code only when asked for."""
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return False
    base = parts[-1]
    if base in DATA_NAMES or base.endswith(SAFE_SUFFIXES):
        return True
    return (allow_pickle and base.endswith(PICKLE_SUFFIXES)) or (trust_remote_code and base.endswith(CODE_SUFFIXES))


def emit(event: str, **fields: Any) -> str:
    line = json.dumps({"event": event, **fields}, ensure_ascii=False)
    print(line, flush=True)
    return line


class Progress:
    """Bytes done against the snapshot's total, reported every `interval` seconds from a ticker thread.

    Finished files count whole; files still downloading count by the size of
    their partial file on disk (the hub client writes `*.incomplete` files
    under the destination's `.cache/`), so one large weight file shows its
    progress too, not only when it ends. The rate is taken since the start, and
    the estimate is what is left at that rate.
    """

    def __init__(self, total: int, count: int, partial: Callable[[], int], interval: float) -> None:
        self.total, self.count, self.partial, self.interval = total, count, partial, interval
        self.done_bytes = 0
        self.done_files = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        if self.interval > 0:
            self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()

    def file_done(self, size: int) -> None:
        with self._lock:
            self.done_bytes += size
            self.done_files += 1

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self, final: bool = False) -> dict[str, Any]:
        with self._lock:
            done, files = self.done_bytes, self.done_files
        if not final:
            done = min(self.total, done + self.partial())
        elapsed = max(time.monotonic() - self.started, 1e-3)
        line = progress_fields(done, self.total, files, self.count, elapsed)
        emit("progress", **line)
        return line


def progress_fields(done: int, total: int, files_done: int, files_total: int, elapsed_s: float) -> dict[str, Any]:
    """What one progress line says; the estimate is absent until a first MiB (or 1 %) has arrived, before which
    the rate says little (the hub client writes partial files in 10 MiB steps)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    fields: dict[str, Any] = {
        "files_done": files_done,
        "files_total": files_total,
        "bytes_done": done,
        "bytes_total": total,
        "percent": round(100 * done / total, 1) if total else 100.0,
        "bytes_per_second": int(rate),
    }
    if rate > 0 and total >= done and (done >= 1 << 20 or done * 100 >= total):
        fields["eta_seconds"] = round((total - done) / rate)
    return fields


def partial_bytes(dest: Path) -> int:
    """Bytes in the hub client's partial files under `dest` (downloads in flight)."""
    total = 0
    for path in (dest / ".cache").rglob("*.incomplete"):
        with contextlib.suppress(OSError):  # a file renamed into place between listing and stat
            total += path.stat().st_size
    return total


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id(path: Path) -> str:
    """The git object id of a file, as the hub lists it for files that are not in LFS."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def problem(path: Path, item: RemoteFile) -> str | None:
    """Why a file in the cache is not the listed one (None: it is): missing, size, sha256 or git blob id."""
    if not path.is_file():
        return f"{item.name} is missing"
    if item.size is not None and path.stat().st_size != item.size:
        return f"{item.name} is {path.stat().st_size} bytes, expected {item.size}"
    if item.sha256 and sha256_of(path) != item.sha256:
        return f"{item.name} does not match its sha256 {item.sha256}"
    if not item.sha256 and item.blob_id and git_blob_id(path) != item.blob_id:
        return f"{item.name} does not match its git blob id {item.blob_id}"
    return None


def check_size(remote: list[RemoteFile], max_bytes: int) -> None:
    total = sum(f.size or 0 for f in remote)
    if max_bytes and total > max_bytes:
        raise FetchError(
            f"the snapshot needs {total} bytes but the cache holds {max_bytes}: raise cache.size (or fetch fewer files)"
        )


def list_remote(repo: str, revision: str, token: str | None, endpoint: str | None) -> list[RemoteFile]:
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token).model_info(repo, revision=revision, files_metadata=True)
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        blob = None if lfs is not None else getattr(sibling, "blob_id", None)
        files.append(RemoteFile(sibling.rfilename, getattr(sibling, "size", None), sha, blob))
    return files


def fetch_hub(
    repo: str,
    revision: str,
    dest: Path,
    gate: tuple[bool, bool],
    token: str | None,
    endpoint: str | None,
    max_bytes: int = 0,
    parallel: int = 4,
    interval: float = 2.0,
) -> list[RemoteFile]:
    from huggingface_hub import hf_hub_download

    remote = [f for f in list_remote(repo, revision, token, endpoint) if wanted(f.name, *gate)]
    if not any(f.name.endswith(".safetensors") or f.name.endswith(PICKLE_SUFFIXES) for f in remote):
        raise FetchError(f"{repo}@{revision} has no safetensors weights (pickled weights need allowPickle)")
    check_size(remote, max_bytes)
    # Largest first: the long downloads start at once and the small files fill the other connections.
    order = sorted(remote, key=lambda f: -(f.size or 0))

    def one(item: RemoteFile) -> None:
        target = dest / item.name
        if problem(target, item) is not None:  # a file kept from an earlier try is verified, never trusted
            hf_hub_download(
                repo,
                item.name,
                revision=revision,
                local_dir=dest,
                token=token,
                endpoint=endpoint,
                force_download=target.exists(),
            )
        progress.file_done(item.size or target.stat().st_size)

    total = sum(f.size or 0 for f in remote)
    with Progress(total, len(remote), lambda: partial_bytes(dest), interval) as progress:
        with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fetch") as pool:
            for future in [pool.submit(one, item) for item in order]:
                future.result()  # the first failure ends the fetch (the pool still lets the others finish)
        progress.report(final=True)
    return remote


def fetch_local(source: Path, dest: Path, gate: tuple[bool, bool], max_bytes: int = 0) -> list[RemoteFile]:
    if not source.is_dir():
        raise FetchError(f"local source {source} is not a directory")
    files = sorted(p for p in source.rglob("*") if p.is_file() and wanted(str(p.relative_to(source)), *gate))
    remote = [RemoteFile(str(p.relative_to(source)), p.stat().st_size, sha256_of(p)) for p in files]
    check_size(remote, max_bytes)
    progress = Progress(sum(f.size or 0 for f in remote), len(remote), lambda: 0, 0)
    for path, item in zip(files, remote, strict=True):
        target = dest / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        progress.file_done(item.size or 0)
        progress.report()
    return remote


def verify(dest: Path, remote: list[RemoteFile], max_bytes: int = 0) -> None:
    """Check that every listed file arrived whole; raise naming the first that did not."""
    for item in remote:
        if (why := problem(dest / item.name, item)) is not None:
            raise FetchError(why)
    size = sum((dest / item.name).stat().st_size for item in remote)
    if max_bytes and size > max_bytes:
        raise FetchError(f"the snapshot is {size} bytes, more than the cache's {max_bytes}: raise cache.size")
    if not (dest / "config.json").is_file() and not any(dest.glob("*.gguf")):
        raise FetchError("the snapshot has no config.json: not a Transformers model")


def marker_record(dest: Path, remote: list[RemoteFile]) -> dict[str, dict[str, Any]]:
    """Per file: its size, and the sha256 of each file the hub gave no sha256 for (small, non-LFS files)."""
    record: dict[str, dict[str, Any]] = {}
    for item in remote:
        path = dest / item.name
        entry: dict[str, Any] = {"size": path.stat().st_size, "lfs": bool(item.sha256)}
        entry["sha256"] = item.sha256 or sha256_of(path)
        record[item.name] = entry
    return record


def cached(dest: Path, repo: str, revision: str) -> dict[str, Any] | None:
    """The marker's summary when it vouches for this exact snapshot and the files still match it.

    A marker of another repository or revision, an older format, or any file
    whose size (or, for small non-LFS files, sha256) differs means the cache is
    verified again against the hub's listing instead of trusted.
    """
    try:
        summary: dict[str, Any] = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = summary.get("files")
    if (
        summary.get("version") != MARKER_VERSION
        or summary.get("repo") != repo
        or summary.get("revision") != revision
        or not isinstance(files, dict)
        or not files
    ):
        return None
    for name, entry in files.items():
        path = dest / name
        if not isinstance(entry, dict) or not path.is_file() or path.stat().st_size != entry.get("size"):
            return None
        if not entry.get("lfs") and sha256_of(path) != entry.get("sha256"):
            return None
    return summary


def read_token(token_file: Path | None) -> str | None:
    if token_file is not None and token_file.is_file():
        return token_file.read_text().strip() or None
    return os.environ.get("HF_TOKEN") or None


def run(args: argparse.Namespace) -> dict[str, Any]:
    allow = [p.strip() for p in (args.allow or os.environ.get("SDC_ALLOWED_SOURCES", "")).split(",") if p.strip()]
    check_allowed(args.repo, allow)
    if not COMMIT_RE.match(args.revision) and not args.allow_unpinned:
        raise FetchError(f"revision '{args.revision}' is not a pinned 40-character commit hash")
    dest = cache_path(args.cache, args.repo, args.revision)
    marker = dest / MARKER
    if (summary := cached(dest, args.repo, args.revision)) is not None:
        emit("cached", repo=args.repo, revision=args.revision, path=str(dest), files=len(summary["files"]))
        return summary
    marker.unlink(missing_ok=True)  # a stale marker must not vouch for a half-verified snapshot
    dest.mkdir(parents=True, exist_ok=True)
    gate = (bool(args.allow_pickle), bool(args.trust_remote_code))
    started = time.monotonic()
    emit("start", repo=args.repo, revision=args.revision, path=str(dest))
    token = read_token(args.token_file)
    if args.source:
        remote = fetch_local(Path(args.source), dest, gate, args.max_bytes)
    else:
        remote = fetch_hub(
            args.repo,
            args.revision,
            dest,
            gate,
            token,
            args.endpoint,
            args.max_bytes,
            parallel=args.parallel,
            interval=args.progress_interval,
        )
    verify(dest, remote, args.max_bytes)
    summary = {
        "version": MARKER_VERSION,
        "repo": args.repo,
        "revision": args.revision,
        "path": str(dest),
        "files": marker_record(dest, remote),
        "bytes": sum(f.size or 0 for f in remote),
        "seconds": round(time.monotonic() - started, 2),
    }
    marker.write_text(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-fetch-model", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--repo", required=True, help="Hugging Face repository id, e.g. google/gemma-2-9b-it")
    parser.add_argument("--revision", required=True, help="a pinned commit hash")
    parser.add_argument("--cache", type=Path, required=True, help="the model cache root (the PVC mount)")
    parser.add_argument(
        "--allow",
        default=None,
        help="comma-separated fnmatch patterns of allowed repositories (default: $SDC_ALLOWED_SOURCES)",
    )
    parser.add_argument("--source", default=None, help="copy from this local directory instead of the hub")
    parser.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT"), help="hub endpoint (a mirror)")
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the hub token")
    parser.add_argument("--allow-pickle", action="store_true", help="also fetch *.bin/*.pt weights")
    parser.add_argument("--trust-remote-code", action="store_true", help="also fetch the repository's *.py")
    parser.add_argument("--allow-unpinned", action="store_true", help="accept a branch or tag as revision")
    parser.add_argument(
        "--max-bytes", type=int, default=0, help="refuse a snapshot larger than this (the cache's size; 0: no cap)"
    )
    parser.add_argument(
        "--parallel", type=int, default=4, choices=range(1, 17), metavar="1-16", help="files downloaded at once"
    )
    parser.add_argument(
        "--progress-interval", type=float, default=2.0, help="seconds between progress lines while downloading"
    )
    parser.add_argument("--termination-log", type=Path, default=Path("/dev/termination-log"))
    args = parser.parse_args(argv)
    try:
        summary = run(args)
        final = emit("done", **{k: v for k, v in summary.items() if k != "files"}, files=len(summary["files"]))
        code = 0
    except FetchError as err:
        final = emit("error", message=str(err))
        code = 2
    except Exception as err:  # the hub's own errors: keep the message, drop the traceback noise
        final = emit("error", message=f"{type(err).__name__}: {err}")
        code = 1
    if args.termination_log.parent.is_dir():
        with contextlib.suppress(OSError):
            args.termination_log.write_text(final[:4000])
    sys.exit(code)
