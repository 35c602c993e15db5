"""User feedback on answers: which provider and model earned the thumbs up or down.

Every chat answer gets a `response_id`; the store remembers, for the most
recent SDC_FEEDBACK_MAX_RESPONSES answers, which provider and model gave it
(a bounded LRU: memory stays flat however long the process runs). A rating
for an id the store no longer (or never) knew is a 404, so feedback is always
attributed to the model that really answered. Ratings are counted in
Prometheus by provider and model, and appended as JSON lines to a file beside
the documents directory, so a restart or a later analysis keeps them; the
append is a single small write per rating, cheap enough for the request path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

from prometheus_client import Counter

log = logging.getLogger("sdc_orchestrator.feedback")

RATINGS = Counter("sdc_orchestrator_feedback_total", "User ratings of answers", ["provider", "model", "rating"])
MAX_COMMENT_CHARS = 2000


@dataclass(frozen=True)
class Answered:
    provider: str
    model: str
    route: str
    at: float
    tenant: str = "default"  # only the tenant that got the answer may rate it


@dataclass(frozen=True)
class Feedback:
    response_id: str
    rating: int
    comment: str | None
    provider: str
    model: str
    route: str
    at: float


class UnknownResponse(LookupError):
    pass


class AlreadyRated(ValueError):
    pass


class FeedbackStore:
    def __init__(self, max_responses: int, path: Path | None) -> None:
        self.max_responses = max_responses
        self.path = path
        self._answers: OrderedDict[str, Answered] = OrderedDict()
        self._rated: set[str] = set()
        self._lock = threading.Lock()

    def answered(self, provider: str, model: str, route: str, tenant: str = "default") -> str:
        """Remember who answered (and for which tenant); returns the new response id."""
        response_id = f"resp-{uuid.uuid4().hex}"
        with self._lock:
            self._answers[response_id] = Answered(provider, model, route, time.time(), tenant)
            while len(self._answers) > self.max_responses:
                old, _ = self._answers.popitem(last=False)
                self._rated.discard(old)
        return response_id

    def who(self, response_id: str) -> Answered | None:
        with self._lock:
            return self._answers.get(response_id)

    def rate(self, response_id: str, rating: int, comment: str | None, tenant: str = "default") -> Feedback:
        """Record one rating per answer; raises UnknownResponse (another tenant's answer too) or AlreadyRated."""
        with self._lock:
            answered = self._answers.get(response_id)
            if answered is None or answered.tenant != tenant:
                raise UnknownResponse(response_id)
            if response_id in self._rated:
                raise AlreadyRated(response_id)
            self._rated.add(response_id)
        item = Feedback(response_id, rating, comment, answered.provider, answered.model, answered.route, time.time())
        RATINGS.labels(item.provider, item.model, "up" if rating > 0 else "down").inc()
        self._persist(item)
        return item

    def _persist(self, item: Feedback) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
        except OSError as err:  # the metric is counted; a full disk must not fail the user's rating
            log.warning("could not append feedback to %s: %s", self.path, err)
