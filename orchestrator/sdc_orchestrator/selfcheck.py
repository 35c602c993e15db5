"""`python -m sdc_orchestrator.selfcheck`: a running orchestrator checked end to end, as its users reach it.

The chart's `helm test` runs this in the orchestrator's own image, against the release's Service, with
the release's generated key: /readyz answers Ready, the gateway refuses a request without a key, and
with the key /v1/models lists the models (at least `auto`) and /api/v1/status says what chat can do
(`no model yet` until a LocalLLM is Ready). Each check prints one line, so `helm test --logs` reads as a
report; the exit status is 1 if any check failed. Only the standard library: it must run anywhere the
package is installed, and it speaks to nothing but the URL it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT_S = 10.0
# A Service answers a moment after its pod is Ready (the endpoints, then each node's kube-proxy rules, follow;
# until then a connection is refused): the first request is retried this long before the check fails.
WAIT_S = 60.0


def first_plain_key(path: Path) -> str | None:
    """The first `NAME:KEY` line's key (a `NAME:sha256:HEX` line holds no usable key)."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key = line.split(":", 1)[1].strip()
        if key and not key.startswith("sha256:"):
            return key
    return None


def get(url: str, key: str | None = None) -> tuple[int, Any]:
    # http(s) only: main() refuses any other scheme.
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"null")
        except ValueError:
            return err.code, None


class Report:
    def __init__(self) -> None:
        self.failed = 0

    def check(self, ok: bool, what: str, detail: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}", flush=True)
        self.failed += not ok


def first_answer(url: str, wait_s: float) -> tuple[int, Any]:
    """GET `url`, retried once a second while nothing answers (refused, unreachable), up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return get(url)
        except (urllib.error.URLError, OSError) as err:
            if time.monotonic() >= deadline:
                raise
            print(f"wait  {url}: {err}; retrying for up to {wait_s:.0f} s", flush=True)
            time.sleep(1.0)


def run(base: str, key: str | None, wait_s: float = WAIT_S) -> int:
    report = Report()
    try:
        status, body = first_answer(f"{base}/readyz", wait_s)
    except (urllib.error.URLError, OSError) as err:
        report.check(False, "GET /readyz", f"{base} does not answer: {err}")
        return 1
    chat = body.get("chat", "?") if isinstance(body, dict) else "?"
    message = body.get("message", "") if isinstance(body, dict) else ""
    report.check(status == 200, "GET /readyz", f"HTTP {status}; chat: {chat} ({message})")
    if key is None:
        report.check(False, "API key", "no plain key in the keys file (only sha256: entries): pass --key")
        return 1
    status, _ = get(f"{base}/v1/models")
    report.check(status == 401, "GET /v1/models without a key", f"HTTP {status} (the gateway must refuse it)")
    status, body = get(f"{base}/v1/models", key)
    ids = [m.get("id") for m in body.get("data", [])] if isinstance(body, dict) else []
    report.check(
        status == 200 and "auto" in ids, "GET /v1/models", f"HTTP {status}; models: {', '.join(map(str, ids))}"
    )
    status, body = get(f"{base}/api/v1/status", key)
    if isinstance(body, dict) and status == 200:
        served = ", ".join(f"{m['name']} ({m['provider']})" for m in body.get("models", [])) or "none"
        report.check(True, "GET /api/v1/status", f"chat: {body.get('chat')}; endpoints: {served}")
    else:
        report.check(False, "GET /api/v1/status", f"HTTP {status}")
    print("passed" if not report.failed else f"{report.failed} check(s) failed", flush=True)
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sdc_orchestrator.selfcheck", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("SDC_CHECK_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--keys-file", type=Path, help="the SDC_API_KEYS_FILE: its first plain key is used")
    parser.add_argument("--key", default=os.environ.get("SDC_API_KEY"), help="an API key (instead of --keys-file)")
    parser.add_argument(
        "--wait-s",
        type=float,
        default=float(os.environ.get("SDC_CHECK_WAIT_S", WAIT_S)),
        help="how long the first request is retried while nothing answers (a Service's endpoints follow its pod)",
    )
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        parser.error(f"--url {args.url}: an http:// or https:// URL")
    key = args.key or (first_plain_key(args.keys_file) if args.keys_file else None)
    sys.exit(run(args.url.rstrip("/"), key, max(0.0, args.wait_s)))


if __name__ == "__main__":
    main()
