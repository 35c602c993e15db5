"""Keep one user on one model during an A/B migration: weighted rendezvous hashing.

A/B comparisons mean nothing if a user's turns bounce between Gemini and a
local model, so a request that names its user (`X-SDC-User`, or the OpenAI
`user` field) is routed by the user, not by chance. Each candidate endpoint
gets the score -ln(u) / weight, with u a uniform number in (0, 1) derived from
a hash of (user, endpoint name); the lowest score wins (Schindelhauer and
Schomaker's weighted rendezvous). Why this one:

- Over many users each endpoint gets exactly its weight's share, so the
  published weights and GEMINI_WEIGHT keep meaning the same thing.
- Adding an endpoint moves only the users who now score lowest on it; no
  other user changes model. Raising one endpoint's weight moves users only
  onto it, never between the others. Removing one moves only its own users.
- No ring, no state: every orchestrator replica computes the same choice.

The order of all candidates is returned, so a failed or cooling endpoint
gives way to that user's second choice, which is stable too.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Weighted(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def weight(self) -> int: ...


E = TypeVar("E", bound=Weighted)
MAX_USER_CHARS = 256


def _uniform(user: str, endpoint: str) -> float:
    digest = hashlib.blake2b(f"{user}\x00{endpoint}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64  # strictly inside (0, 1)


def preference(user: str, candidates: Sequence[E]) -> list[E]:
    """Candidates with a positive weight, the user's first choice first."""
    user = user[:MAX_USER_CHARS]
    pool = [c for c in candidates if c.weight > 0]
    return sorted(pool, key=lambda c: (-math.log(_uniform(user, c.name)) / c.weight, c.name))


def pick(user: str, candidates: Sequence[E]) -> E | None:
    order = preference(user, candidates)
    return order[0] if order else None
