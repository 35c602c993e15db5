"""`sdc-operator`: run the LocalLLM operator against $KUBECONFIG (or in-cluster)."""

from __future__ import annotations

import argparse
import logging
import secrets

import kopf

from sdc_operator.settings import OperatorSettings


def main(argv: list[str] | None = None) -> None:
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
    kopf.run(
        priority=priority,
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )
