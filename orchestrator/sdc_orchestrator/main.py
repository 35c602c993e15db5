"""`sdc-orchestrator`: serve the chat API."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-orchestrator", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("SDC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SDC_PORT", "8080")))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=75,
        help="seconds an idle client connection is kept; longer than clients' own idle expiry (httpx: 5 s), "
        "so a client never reuses a connection the server is closing",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        "sdc_orchestrator.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=int(args.timeout_keep_alive),
    )
