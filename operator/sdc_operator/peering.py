"""Peering between operator replicas: the decision that refuses to start beside a live peer of equal priority."""

from __future__ import annotations

import datetime
from typing import Any


def priority_clash(peers: dict[str, Any], priority: int, now: datetime.datetime, own: str) -> list[str]:
    """Live peers (in a Kopf peering object's status) other than this replica with its priority.

    Kopf pauses every replica when two share a priority, so the operator
    refuses to start into that state instead: the admin sees why at once.
    `own` is this replica's identity (its POD_ID, or `user@host/` as a prefix):
    the entry a killed earlier run of this same replica left is not a peer.
    """
    clash = []
    for peer_id, info in peers.items():
        if peer_id == own or (own.endswith("/") and peer_id.startswith(own)):
            continue
        if not isinstance(info, dict) or int(info.get("priority", -1)) != priority:
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
        except (KeyError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now:
            clash.append(peer_id)
    return clash


def outranked(peers: dict[str, Any], priority: int, now: datetime.datetime) -> bool:
    """A live peer has a higher priority than this replica: Kopf pauses this one's handlers.

    Work the operator does outside Kopf's handlers (the download progress watcher) asks this too,
    so that a paused replica does not write what the active one writes.
    """
    for info in peers.values():
        if not isinstance(info, dict):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            higher = int(info.get("priority", -1)) > priority
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
        except (KeyError, ValueError, TypeError, OverflowError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if higher and seen + lifetime > now:
            return True
    return False
