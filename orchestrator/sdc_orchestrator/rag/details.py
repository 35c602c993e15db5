"""The details that tell near-duplicate passages apart, and how much each one distinguishes (issue #27).

Company documents come in families of near-copies: the 2023 and the 2024 rule, the rule before and
after a revision, one page per site, environment or product model. A question about one of them
shares almost every word with all of them; what decides is one detail, and the question often writes
it another way than the passage (나흘 for 4일, 24년 for 2024년, SX-200 for SX200, 프로덕션 for 운영 환경).

Two parts:

- `extract`: typed details of an analysed text, as (slot, value) pairs, on both sides. Numbers with a
  unit come from the analyser's merged tokens, which `normalize.py` has already put in one spelling
  (native and Sino-Korean numerals, 당일치기, halves, short years, codes, versions); years are told
  from durations (2024년 is a year, 3년 a duration); a revision (개정 전 / 개정 후 and their usual
  paraphrases) and a deployment environment (prod, staging, dev, test) come from the text.
- `discriminate`: among the leading candidates of one question (the cluster of similar passages the
  question landed in), each question term or detail is weighted by how rare it is in that cluster
  (log(n / cluster frequency), times its corpus idf): a word every sibling has decides nothing, the
  year only one of them has decides a lot. A candidate's score is the share of that weight it holds,
  less a penalty when it states a different value of a slot the question fixes (the question asks
  about 4일 and the passage says 5일 and not 4일; the question says 개정 후 and the passage is 개정 전).

Everything is a regular expression or a set operation over at most a few dozen candidates: linear in
the text at ingestion, microseconds per candidate at search.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sdc_orchestrator.rag.normalize import UNITS

# Canonical units a number may carry once normalized (normalize.UNITS' values), plus the analyser's own.
_UNITS = sorted({*UNITS.values(), "영업일", "박"}, key=len, reverse=True)
_NUMBER_TERM = re.compile(rf"^(\d+(?:\.\d+)?)({'|'.join(map(re.escape, _UNITS))})$")
_CODE_TERM = re.compile(r"^([a-z]{1,6})(\d[\d.]*)$")
_SPACE = r"\s?"
# A revision: the older rule or the newer one. Only phrasings that name a side (a bare 개정 does not).
_REVISION = {
    "old": re.compile(
        rf"개정{_SPACE}전|개정되기{_SPACE}전|개정{_SPACE}이전|이전{_SPACE}규정|예전{_SPACE}규정|종전|기존{_SPACE}규정|"
        rf"옛{_SPACE}규정|구{_SPACE}규정|바뀌기{_SPACE}전|변경{_SPACE}전"
    ),
    "new": re.compile(
        rf"개정{_SPACE}후|개정된|개정{_SPACE}이후|개정{_SPACE}규정|바뀐|변경된|변경{_SPACE}후|새{_SPACE}규정|새로운{_SPACE}규정|"
        rf"신규{_SPACE}규정|현행|최신{_SPACE}규정|\d{{4}}년{_SPACE}개정"
    ),
}
# A deployment environment: its Latin name (normalize.py maps 프로덕션, 스테이징 and the like to it) or a
# Korean noun before 환경 / 서버 / 클러스터 / 계 (운영 alone is also "operation", so it needs one of them).
_ENVIRONMENT = {
    "prod": re.compile(r"(?<![a-z])prod(?![a-z])|운영\s?(?:환경|서버|클러스터|계|망|db)|상용\s?(?:환경|서버)"),
    "staging": re.compile(r"(?<![a-z])staging(?![a-z])|검증\s?(?:환경|서버|클러스터|계)"),
    "dev": re.compile(r"(?<![a-z])dev(?![a-z])|개발\s?(?:환경|서버|클러스터|계|망)"),
    "test": re.compile(r"(?<![a-z])(?:test|qa)\s?(?:환경|서버|클러스터)|테스트\s?(?:환경|서버|클러스터|계)"),
}
# The newest or the oldest of a family (신형, 최신, 구형): the member with the latest or earliest year.
_NEWEST = re.compile(r"신형|최신|신제품|새로\s?나온|신모델|요즘\s?나온|최근\s?나온")
_OLDEST = re.compile(r"구형|구모델|예전\s?모델|옛날\s?모델|이전\s?모델")
# The largest or the smallest of a family (가장 큰 사이즈, 제일 여럿이 쓰는, 가장 싼): the member with the highest or
# the lowest numbers among those its siblings state differently; a price word picks the amount of money.
_MOST = re.compile(r"(?:가장|제일|젤)\s?(?:큰|크|많|여럿|넓|긴|길|높|비싼|비싸|무거)")
_LEAST = re.compile(r"(?:가장|제일|젤)\s?(?:작|적|좁|짧|낮|싼|저렴|가벼)")
_PRICE = re.compile(r"(?:가장|제일|젤)\s?(?:비싼|비싸|싼|저렴)")
_MONEY = "n:원"
# 당일 (that same day) is one day when the slot is a number of days: a detail alias, not an index term.
_SAME_DAY = re.compile(r"당일|하루\s?만에")


# A number and the word glued or spaced after it (58면, 6인실, 140 학점, 1.1kg, 30%), trailing particle cut.
_COUNTED = re.compile(r"(?<![\d.,a-z])(\d+(?:,\d{3})*(?:\.\d+)?)\s?([가-힣]{1,4}|[a-z]{1,3}(?![a-z])|%)")
_PARTICLES = sorted(
    [
        *("이며", "이고", "이다", "이면", "이나", "으로", "에서", "에게", "까지", "부터", "이상", "이하", "이내"),
        *("미만", "마다", "동안", "짜리", "정도", "은", "는", "이", "가", "을", "를", "에", "의", "도", "만", "로"),
        *("과", "와", "간", "씩", "째", "당", "후", "전", "내", "안"),
    ],
    key=len,
    reverse=True,
)
_PARTICLE_SET = frozenset(_PARTICLES)
_FRACTION = re.compile(r"(\d+)\s?분의\s?(\d+)")
_HALF_WORD = re.compile(r"절반|반값|반액")
_DAYS = {"일": 1, "주": 7, "개월": 30, "년": 365}


def _strip_particle(unit: str) -> str:
    """The counter without a particle or ending after it: 학점이며 -> 학점, 통에 -> 통, 일간 -> 일."""
    for _ in range(2):
        for particle in _PARTICLES:
            if unit.endswith(particle) and len(unit) > len(particle):
                unit = unit[: -len(particle)]
                break
    return unit


@dataclass(frozen=True)
class Details:
    """A text's details: slot -> the values it states (year, number units, revision, env, code families)."""

    slots: Mapping[str, frozenset[str]]

    def features(self) -> set[str]:
        return {f"{slot}={value}" for slot, values in self.slots.items() for value in values}

    def as_lists(self) -> dict[str, list[str]]:
        """The details as a Passage stores them (JSON: lists, sorted so a stored file is reproducible)."""
        return {slot: sorted(values) for slot, values in self.slots.items()}

    @classmethod
    def from_lists(cls, stored: Mapping[str, Iterable[str]]) -> Details:
        return cls({slot: frozenset(values) for slot, values in stored.items()})


def extract(terms: Iterable[str], text: str) -> Details:
    """Details of an analysed text: `terms` are its analyser terms, `text` its normalized text."""
    slots: dict[str, set[str]] = {}

    def put(slot: str, value: str) -> None:
        slots.setdefault(slot, set()).add(value)

    for term in terms:
        if match := _NUMBER_TERM.match(term):
            value, unit = match.groups()
            if unit == "년" and value.isdigit() and 1900 <= int(value) <= 2100:
                put("year", value)
            else:
                put(f"n:{unit}", value)
        elif match := _CODE_TERM.match(term):
            put(f"code:{match.group(1)}", match.group(2))
    lowered = text.lower()
    # Numbers with any counter, read off the text as well: the analyser does not merge every counter
    # (58면, 6인실, 140학점 come out as a bare number), and a detail must not depend on it.
    for match in _FRACTION.finditer(lowered):
        whole, part = int(match.group(1)), int(match.group(2))
        if whole:
            put("pct", f"{100 * part / whole:g}")
    for match in _COUNTED.finditer(_FRACTION.sub(" ", lowered)):
        value, unit = match.group(1).replace(",", ""), _strip_particle(match.group(2))
        if not unit or unit in _PARTICLE_SET:
            continue
        if unit in ("년", "년형", "년도") and value.isdigit() and 1900 <= int(value) <= 2100:
            put("year", value)
        else:
            put(f"n:{unit}", value)
    if _HALF_WORD.search(lowered):
        put("pct", "50")
    # Durations in days as well, so 석 달 (3개월) meets 90일 and 두 주 (2주) meets 14일.
    for unit, days in _DAYS.items():
        for value in list(slots.get(f"n:{unit}", ())):
            try:
                put("days", f"{float(value) * days:g}")
            except ValueError:
                continue
    for value in slots.pop("n:%", set()):
        put("pct", value)
    for side, pattern in _REVISION.items():
        if pattern.search(lowered):
            put("revision", side)
    for env, pattern in _ENVIRONMENT.items():
        if pattern.search(lowered):
            put("env", env)
    if _NEWEST.search(lowered) or "new" in slots.get("revision", ()):
        put("recency", "new")
    if _OLDEST.search(lowered) or "old" in slots.get("revision", ()):
        put("recency", "old")
    if _SAME_DAY.search(lowered):
        put("n:일", "1")
    if _MOST.search(lowered):
        put("extreme", "max")
    if _LEAST.search(lowered):
        put("extreme", "min")
    if _PRICE.search(lowered):
        put("extreme_of", "price")
    return Details({slot: frozenset(values) for slot, values in slots.items()})


def label(item: str) -> str:
    """How a hit names a deciding detail: the question's word, or the detail as the index spells it
    (year=2024 -> 2024년, n:일=4 -> 4일, code:sx=200 -> sx200, revision=new -> 개정 후)."""
    if "=" not in item:
        return item
    slot, value = item.split("=", 1)
    if slot == "year":
        return f"{value}년"
    if slot == "days":
        return f"{value}일"
    if slot == "pct":
        return f"{value}%"
    if slot == "recency":
        return "최신" if value == "new" else "이전"
    if slot.startswith(("n:", "code:")):
        return slot.split(":", 1)[1] + value if slot.startswith("code:") else value + slot[2:]
    if slot == "revision":
        return "개정 후" if value == "new" else "개정 전"
    if slot == "extreme":
        return "가장 큰" if value == "max" else "가장 작은"
    return value


def is_detail_term(term: str) -> bool:
    """A number with a unit or a code: `extract` already turns it into a typed detail."""
    return bool(_NUMBER_TERM.match(term) or _CODE_TERM.match(term))


# Slots a question states relative to the family, not as a value a passage could state otherwise.
RELATIVE = frozenset({"extreme", "extreme_of"})


def _family(candidates: Mapping[str, set[str]], query_terms: Iterable[str], similar: float) -> set[str]:
    """The leading candidate (candidates come best first) and its near-copies, less those lacking a question
    word that most of them have (표준형 중에: the GPU server is a near-copy of the standard ones, not one of them)."""
    first = candidates[next(iter(candidates))]
    family = {key for key, terms in candidates.items() if _jaccard(terms, first) >= similar}
    common = {t for t in query_terms if 2 * sum(t in candidates[key] for key in family) > len(family)}
    return {key for key in family if common <= candidates[key]}


def _extreme(candidates: Mapping[str, Details], side: str, price: bool) -> set[str]:
    """The candidates holding the highest (`side` "max") or lowest number in most of the numeric slots
    whose values differ among them: amounts of money only when the question asked about price, every
    other number otherwise (6인실 over 2인실 and 1인실 for 제일 여럿이 쓰는 병실, L for 가장 큰 가상서버)."""
    votes: dict[str, int] = {}
    slots = {slot for d in candidates.values() for slot in d.slots if slot.startswith("n:") or slot in ("days", "pct")}
    for slot in sorted(slots):
        if (slot == _MONEY) != price:
            continue
        values: dict[str, float] = {}
        for key, d in candidates.items():
            numbers = [float(v) for v in d.slots.get(slot, ()) if _NUMBER.match(v)]
            if numbers:
                values[key] = max(numbers) if side == "max" else min(numbers)
        if len(set(values.values())) < 2:
            continue
        target = max(values.values()) if side == "max" else min(values.values())
        for key, value in values.items():
            if value == target:
                votes[key] = votes.get(key, 0) + 1
    most = max(votes.values(), default=0)
    return {key for key, n in votes.items() if n == most}


_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class Discrimination:
    score: dict[str, float]  # per candidate, in [-conflict, 1]
    deciding: dict[str, list[str]]  # the rare-in-family question words and details each candidate holds


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a | b))


def discriminate(
    query_terms: Mapping[str, float],
    query_details: Details,
    candidates: Mapping[str, set[str]],
    candidate_details: Mapping[str, Details],
    total_idf: float,
    conflict: float = 0.5,
    similar: float = 0.3,
    words: Iterable[str] = (),
) -> Discrimination:
    """Score each candidate by the question details it holds that tell it from its near-copies.

    `candidates` (key -> its terms) are the question's leading candidates, its cluster. Each question
    word (`query_terms`: word -> corpus idf; names, not numbers) and typed detail weighs its idf (a
    typed detail, the question's highest) times its rarity in the cluster, log(n / how many have it) /
    log(n): what every candidate has decides nothing, what one has decides fully. A candidate is
    credited with an item only when one of its near-copies (term-set Jaccard >= `similar`) lacks it,
    so a question that did not land among near-duplicates is left to the other signals; the credit is
    a share of the question's whole idf (`total_idf`), so one incidental number in a long question
    counts little and the year that is half of a short one counts a lot. A slot the question fixes (a
    year, a number of days, a revision, an environment) for which the candidate states only other
    values, while a cluster member states the question's, costs `conflict` (split over such slots):
    the sibling that says 5일 falls below the one that says 4일 even when it matches more of the
    question's other words. A question for the largest or smallest of a family (`extreme`) credits the
    family member (near-copies of the leading candidate sharing most of the question's `words`) with the
    highest or lowest numbers, and its siblings clash.
    """
    score = dict.fromkeys(candidates, 0.0)
    deciding: dict[str, list[str]] = {key: [] for key in candidates}
    n = len(candidates)
    if n < 2:
        return Discrimination(score, deciding)
    qfeatures = query_details.features()
    default_idf = max(query_terms.values(), default=total_idf / 4)
    features = {key: candidate_details[key].features() for key in candidates}
    held = {
        key: {t for t in query_terms if t in terms} | (qfeatures & features[key]) for key, terms in candidates.items()
    }
    # recency=new is held by the candidate with the latest year among those stating one (oldest: earliest).
    years = {key: max(map(int, d.slots["year"])) for key, d in candidate_details.items() if "year" in d.slots}
    if len(set(years.values())) > 1:
        for side, pick in (("new", max), ("old", min)):
            if f"recency={side}" in qfeatures:
                chosen = pick(years.values())
                for key, year in years.items():
                    if year == chosen:
                        held[key].add(f"recency={side}")
    for side in ("max", "min"):
        if f"extreme={side}" in qfeatures:
            price = "price" in query_details.slots.get("extreme_of", frozenset())
            family = _family(candidates, set(words) | set(query_terms), similar)
            members = _extreme({key: candidate_details[key] for key in family}, side, price)
            for key in members:
                held[key].add(f"extreme={side}")
            if members and conflict > 0:
                # the question fixes the member: its siblings clash, as a sibling stating another year does
                for key in family - members:
                    score[key] -= conflict / 2
    weight: dict[str, float] = {}
    for item in (*query_terms, *qfeatures):
        df = sum(item in h for h in held.values())
        if 0 < df < n:
            weight[item] = query_terms.get(item, default_idf) * math.log(n / df) / math.log(n) / max(total_idf, 1e-9)
    # Only a value some candidate states marks a sibling: a number the question mentions that no
    # candidate has (a 4-day trip, asked of a per-day rate) tells nothing apart and costs nothing.
    fixed = [
        slot
        for slot, values in query_details.slots.items()
        if slot not in RELATIVE
        and any(values & candidate_details[key].slots.get(slot, frozenset()) for key in candidates)
    ]
    for key, terms in candidates.items():
        if weight:
            copies = [held[o] for o, theirs in candidates.items() if o != key and _jaccard(terms, theirs) >= similar]
            for item in held[key]:
                if item in weight and any(item not in other for other in copies):
                    score[key] += weight[item]
                    if label(item) not in deciding[key]:
                        deciding[key].append(label(item))
        slots = candidate_details[key].slots
        if fixed and conflict > 0:
            clashes = sum(1 for slot in fixed if slot in slots and not query_details.slots[slot] & slots[slot])
            score[key] -= conflict * clashes / len(fixed)
    return Discrimination(score, deciding)
