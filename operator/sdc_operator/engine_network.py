"""Where the operator itself gives engine pods a NetworkPolicy, and with which rules (pure: no API calls).

The chart renders one namespace-wide policy for the engines of each namespace its release serves. Engines
in any other namespace (a team's own, `routing.namespaces: ["*"]`, a second release's) would have none: any
pod could chat with them directly or call Ollama's /api/pull and /api/delete. There the operator makes one
per LocalLLM, an owned child beside the Deployment (`builders/network_policy.py`), from the same values the
chart uses (`SDC_ENGINE_NETWORK_POLICY`, JSON, written by the chart). A policy it made that is no longer
wanted (the values turned it off, or the chart now covers the namespace) is deleted (`plan.stale_children`);
NetworkPolicies it does not own are never read for decisions, written or deleted.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Private, carrier-grade NAT and link-local ranges (cloud metadata at 169.254.169.254): the HTTPS rule admits
# every address but these, so an engine reaches a public hub but no in-cluster address and no metadata server.
PRIVATE_CIDRS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")


class _Camel(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EngineEgress(_Camel):
    """What an engine pod may open: DNS, HTTPS outside `except_cidrs` (the hub, Ollama's registry), `extra_to`."""

    except_cidrs: list[str] = Field(default_factory=lambda: list(PRIVATE_CIDRS))
    dns_to: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Peers for DNS (port 53). Empty: any address, port 53 only (the cluster's DNS Service, a "
        "node-local cache at a link-local address, a resolver on the node).",
    )
    extra_to: list[dict[str, Any]] = Field(
        default_factory=list, description="More peers, any port: an in-cluster hub or mirror, a proxy."
    )


class EngineNetworkPolicy(_Camel):
    """The release's engine policy values, as the chart passes them to the operator."""

    orchestrator_namespace: str = Field(description="The release's namespace, where its orchestrator runs.")
    orchestrator_labels: dict[str, str] = Field(description="The orchestrator pods' labels.")
    ingress_from: list[dict[str, Any]] = Field(
        default_factory=list, description="More peers allowed to the engine port (networkPolicy.engineIngressFrom)."
    )
    chart_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces where the chart renders the engines' policies itself."
    )
    egress: EngineEgress | None = Field(default=None, description="None: engines' egress is not restricted.")


def egress_rules(egress: EngineEgress) -> list[dict[str, Any]]:
    """DNS, then HTTPS to public addresses, then the configured extra peers (the chart renders the same)."""
    dns: dict[str, Any] = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    if egress.dns_to:
        dns = {"to": egress.dns_to, **dns}
    rules = [
        dns,
        {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": egress.except_cidrs}}],
            "ports": [{"port": 443, "protocol": "TCP"}],
        },
    ]
    if egress.extra_to:
        rules.append({"to": egress.extra_to})
    return rules
