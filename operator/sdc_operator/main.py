"""`sdc-operator`: run the LocalLLM operator against $KUBECONFIG (or in-cluster)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import logging
import os
import secrets
import sys
from typing import Any

import kopf

from sdc_operator.settings import OperatorSettings

M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)


def refuse_equal_priority(settings: OperatorSettings, priority: int) -> None:
    """Two live replicas with one priority would both pause (Kopf's rule): refuse to start instead."""
    from kopf._core.engines.peering import detect_own_id  # the identity Kopf writes in the peering object

    from sdc_operator import kube
    from sdc_operator.peering import priority_clash

    async def read_peers() -> dict[str, Any]:
        try:
            return await kube.peering_status(settings.peering_name, settings.watch_namespaces)
        finally:
            await kube.close()

    try:
        peers = asyncio.run(read_peers())
    except kube.ApiError as err:  # no API yet: Kopf's own peering still pauses a clash
        logging.getLogger("sdc_operator").warning("cannot read the peering object: %s", err)
        return
    own = os.environ.get("POD_ID") or f"{detect_own_id(manual=True)}/"  # Kopf's identity, less its start time
    clash = priority_clash(peers, priority, datetime.datetime.now(datetime.UTC), own)
    if clash:
        sys.exit(
            f"sdc-operator: refusing to start: peer(s) {', '.join(clash)} already run with priority {priority} "
            "(SDC_PEERING_PRIORITY); give every replica its own priority, or leave it unset to draw one"
        )


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates at once its own heap (up to 8 per core), and the API threads'
    short-lived JSON leaves each of them holding freed memory: a few arenas keep the resident size down
    (Kopf and the API calls run on one loop; the remaining threads are few). A no-op off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas)


def main(argv: list[str] | None = None) -> None:
    fewer_malloc_arenas()
    parser = argparse.ArgumentParser(prog="sdc-operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    settings = OperatorSettings()
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(verbose=args.verbose, log_format=log_format)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("sdc_operator").setLevel(logging.INFO)
    if not args.verbose:
        # Kopf logs every handler success per event: thousands of lines a minute at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import sdc_operator.handlers  # noqa: F401  (registers the handlers)

    # Equal priorities would let two replicas act at once: draw one unless told.
    priority = settings.peering_priority
    if priority is None:
        priority = secrets.randbelow(1_000_000) + 1
    elif not settings.standalone:
        refuse_equal_priority(settings, priority)
    kopf.run(
        priority=priority,
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )
