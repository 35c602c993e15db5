"""`sdc-orchestrator`: serve the chat API.

Shutdown is bounded: on SIGTERM uvicorn stops accepting, gives requests in
flight GRACE_S to finish, then cancels them; indexing that runs in a worker
thread cannot be cancelled, and Python would wait for it at exit, so a
watchdog ends the process HARD_STOP_S after the signal whatever still runs
(the document store's writes are atomic, so nothing is left half-written).

The HTTP edge (header size and count, header and body read deadlines, idle
connections, concurrency) is sdc_orchestrator.edge, set from SDC_MAX_HEADER_BYTES,
SDC_MAX_HEADERS, SDC_HEADER_TIMEOUT_S, SDC_BODY_TIMEOUT_S and SDC_LIMIT_CONCURRENCY.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from types import FrameType
from typing import Any

import uvicorn

from sdc_orchestrator.edge import EdgeLimits, server_config

GRACE_S = 5
HARD_STOP_S = 8.0


class BoundedShutdownServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            timer = threading.Timer(HARD_STOP_S, os._exit, (0,))
            timer.daemon = True
            timer.start()
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-orchestrator", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("SDC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SDC_PORT", "8080")))
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="must be 1: documents, feedback, rate limits and cool-downs live in the process (scale with replicas "
        "of one process each only where the chart allows)",
    )
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=75,
        help="seconds an idle client connection is kept; longer than clients' own idle expiry (httpx: 5 s), "
        "so a client never reuses a connection the server is closing",
    )
    args = parser.parse_args(argv)
    if args.workers != 1:
        # N processes would each hold their own index, feedback, per-key limits and cool-downs: a document
        # uploaded to one is missing from the others' answers and every limit is N times looser. Refused.
        parser.error(
            f"--workers {args.workers}: the orchestrator keeps documents, feedback, rate limits and endpoint "
            "cool-downs in its process, so N workers would diverge; run one worker per process"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    limits = EdgeLimits.from_env(keep_alive_s=int(args.timeout_keep_alive))
    options: dict[str, Any] = {
        "factory": True,
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": GRACE_S,
    }
    config = server_config("sdc_orchestrator.app:create_app", args.host, args.port, limits, **options)
    BoundedShutdownServer(config).run()
