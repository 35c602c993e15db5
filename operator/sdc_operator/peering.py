"""Peering between operator replicas: the decision that refuses to start beside a live peer of equal priority,
and whether a live peer outranks this replica (Kopf then pauses it)."""

from __future__ import annotations

import datetime
from typing import Any


def _live(info: object, now: datetime.datetime) -> dict[str, Any] | None:
    """A peer entry of Kopf's peering object that is still alive (seen within its lifetime), else None
    (gone, or an entry that cannot be read)."""
    if not isinstance(info, dict):
        return None
    try:
        seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
        lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
    except (KeyError, ValueError, TypeError, OverflowError):
        return None
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=datetime.UTC)
    return info if seen + lifetime > now else None


def _priority(info: dict[str, Any]) -> int | None:
    try:
        return int(info.get("priority", -1))
    except (TypeError, ValueError):
        return None


def priority_clash(peers: dict[str, Any], priority: int, now: datetime.datetime, own: str) -> list[str]:
    """Live peers (in a Kopf peering object's status) other than this replica with its priority.

    Kopf pauses every replica when two share a priority, so the operator
    refuses to start into that state instead: the admin sees why at once.
    `own` is this replica's identity (its POD_ID, or `user@host/` as a prefix):
    the entry a killed earlier run of this same replica left is not a peer.
    """
    return [
        peer_id
        for peer_id, info in peers.items()
        if not (peer_id == own or (own.endswith("/") and peer_id.startswith(own)))
        and (live := _live(info, now)) is not None
        and _priority(live) == priority
    ]


def outranked(peers: dict[str, Any], priority: int, now: datetime.datetime) -> bool:
    """A live peer has a higher priority than this replica: Kopf pauses this one's handlers.

    Work the operator does outside Kopf's handlers (the download progress watcher) asks this too,
    so that a paused replica does not write what the active one writes.
    """
    higher = (_priority(live) for info in peers.values() if (live := _live(info, now)) is not None)
    return any(p is not None and p > priority for p in higher)
