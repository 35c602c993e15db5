"""Text normalization applied identically to passages and questions, before Kiwi.

Why: the same fact is written many ways in Korean company documents, and BM25
only matches what is spelled the same. Three families matter most:

- Loanwords and abbreviations: 쿠버네티스 / Kubernetes / k8s, 크래시루프백오프 /
  CrashLoopBackOff, 디비 / DB / 데이터베이스. A fixed lexicon maps every known
  spelling to one canonical (Latin, lower-case) form. The lexicon is general IT
  and office vocabulary, not a list of the evaluation set's answers; deployments
  extend it with `SDC_RAG_SYNONYMS_FILE` (see `load_synonyms`).
- Numbers: 나흘 = 4일, 석 달 = 3개월, 스무 권 = 20권, 오만 원 = 5만 원 = 50,000원 =
  50000원, 오후 여섯 시 = 18시, 2024.07 = 2024년 7월. Native and Sino-Korean
  numerals become digits and counters become one canonical unit, so the merged
  token (`3개월`) is the same on both sides.
- Case and punctuation inside Latin words (Wi-Fi = wifi).

Every rule is a regular expression applied once, left to right, so the cost is
linear in the text (ingestion stays linear, issue #13). Rules are deliberately
conservative where a numeral is also an ordinary word: 이월 (carry over), 사원
(employee) and 이번 (this time) must not become numbers, so a lone Sino-Korean
digit converts only before an unambiguous unit (년, 개월, 시간, 퍼센트).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

# canonical form -> other spellings (Hangul transliterations, abbreviations, expansions).
# Lower-case Latin canonical forms; Kiwi tags them SL and keeps them whole.
LEXICON: dict[str, tuple[str, ...]] = {
    "kubernetes": ("쿠버네티스", "쿠베르네티스", "큐버네티스", "k8s"),
    "crashloopbackoff": ("크래시루프백오프", "크래쉬루프백오프", "크래시 루프 백오프", "crash loop back off"),
    "imagepullbackoff": ("이미지풀백오프", "이미지 풀 백오프", "image pull back off"),
    "oomkilled": ("오오엠킬드", "오오엠 킬드", "oom killed", "oom-killed"),
    "pod": ("파드", "포드"),
    "node": ("노드",),
    "namespace": ("네임스페이스", "네임 스페이스"),
    "ingress": ("인그레스",),
    "configmap": ("컨피그맵", "컨피그 맵", "config map"),
    "secret": ("시크릿",),
    "hpa": ("에이치피에이", "horizontal pod autoscaler", "수평 파드 오토스케일러"),
    "kubectl": ("큐브컨트롤", "큐브씨티엘", "쿠브컨트롤"),
    "helm": ("헬름",),
    "docker": ("도커",),
    "container": ("컨테이너",),
    "registry": ("레지스트리",),
    "harbor": ("하버",),
    "vpn": ("브이피엔", "virtual private network"),
    "globalprotect": ("글로벌프로텍트", "글로벌 프로텍트", "global protect"),
    "otp": ("오티피", "일회용 비밀번호", "one time password"),
    "mfa": ("엠에프에이", "multi factor authentication", "multi-factor authentication", "다중 인증", "다중인증"),
    "vault": ("볼트",),
    "rto": ("알티오", "recovery time objective", "목표 복구 시간"),
    "rpo": ("알피오", "recovery point objective", "목표 복구 시점"),
    "grafana": ("그라파나", "그라파나"),
    "prometheus": ("프로메테우스",),
    "alertmanager": ("얼럿매니저", "알럿매니저", "alert manager"),
    "thanos": ("타노스",),
    "loki": ("로키",),
    "slack": ("슬랙",),
    "outlook": ("아웃룩",),
    "zoom": ("줌",),
    "jenkins": ("젠킨스",),
    "github": ("깃허브", "깃헙", "git hub"),
    "actions": ("액션즈", "액션스", "액션"),
    "argocd": ("아르고 시디", "아르고시디", "아르고 cd", "argo cd"),
    "git": ("깃",),
    "pullrequest": ("풀 리퀘스트", "풀리퀘스트", "pull request"),
    "hotfix": ("핫픽스", "긴급 수정"),
    "rollback": ("롤백",),
    "postgresql": ("포스트그레스큐엘", "포스트그레스", "포스트그레에스큐엘", "postgres"),
    "db": ("디비", "데이터베이스", "database"),
    "dba": ("디비에이",),
    "sql": ("에스큐엘",),
    "gpu": ("지피유", "그래픽카드"),
    "cpu": ("씨피유",),
    "nvidia": ("엔비디아",),
    "a100": ("에이백", "에이 백"),
    "h100": ("에이치백", "에이치 백"),
    "llm": ("엘엘엠", "대규모 언어 모델", "거대 언어 모델"),
    "vllm": ("브이엘엘엠",),
    "thinkpad": ("씽크패드", "싱크패드", "think pad"),
    "macbook": ("맥북",),
    "bios": ("바이오스",),
    "usb": ("유에스비",),
    "wifi": ("와이파이", "wi-fi", "wi fi"),
    "mdm": ("엠디엠", "mobile device management"),
    "qr": ("큐알", "큐아르"),
    "api": ("에이피아이",),
    "tls": ("티엘에스",),
    "ssl": ("에스에스엘",),
    "dns": ("디엔에스",),
    "aws": ("아마존 웹 서비스", "amazon web services", "에이더블유에스"),
    "chatgpt": ("챗지피티", "챗gpt", "chat gpt"),
    "ai": ("에이아이", "인공지능"),
    "pc": ("피씨", "피시"),
    "cto": ("씨티오",),
    "it": ("아이티",),
    "email": ("이메일", "e-mail"),
    "ci": ("씨아이",),
    "cd": ("씨디",),
    "qa": ("큐에이",),
    "hr": ("에이치알",),
    "kwh": ("킬로와트시",),
    "gb": ("기가바이트", "기가"),
    "mb": ("메가바이트", "메가"),
    "tb": ("테라바이트", "테라"),
    "비밀번호": ("비번", "패스워드", "password"),
    # deployment environments (issue #27: near-duplicate runbooks differ by environment)
    "prod": ("production", "프로덕션", "프로드", "운영계", "상용계"),
    "staging": ("stg", "stage", "스테이징", "스테이지"),
    "dev": ("development", "개발계", "데브"),
}

_HANGUL = "가-힣"


def _variant_pattern(variant: str) -> str:
    """A variant as a regex: flexible inner spacing; Latin variants need word boundaries on both sides,
    Hangul ones only on the left (Korean attaches particles on the right: 쿠버네티스에서)."""
    words = [re.escape(w) for w in variant.split()]
    body = r"[\s\-]?".join(words)
    if re.match(r"[A-Za-z0-9]", variant):
        return rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])"
    return rf"(?<![{_HANGUL}]){body}"


class Lexicon:
    """Spelling variants -> canonical form, compiled into one alternation (longest variant first)."""

    def __init__(self, entries: Mapping[str, Iterable[str]]) -> None:
        self.canonical: dict[str, str] = {}
        for canonical, variants in entries.items():
            for variant in (*variants, canonical):
                if variant:
                    self.canonical[" ".join(variant.lower().replace("-", " ").split())] = canonical
        ordered = sorted(self.canonical, key=len, reverse=True)
        self.fingerprint = hashlib.sha256(repr(sorted(self.canonical.items())).encode()).hexdigest()[:12]
        self.pattern = re.compile("|".join(_variant_pattern(v) for v in ordered), re.IGNORECASE)

    def apply(self, text: str) -> str:
        def sub(match: re.Match[str]) -> str:
            key = " ".join(match.group(0).lower().replace("-", " ").split())
            return self.canonical.get(key, match.group(0))

        return self.pattern.sub(sub, text)


def load_synonyms(path: Path) -> dict[str, tuple[str, ...]]:
    """Lines `canonical: variant, variant, ...` (blank lines and # comments ignored)."""
    entries: dict[str, tuple[str, ...]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or ":" not in line:
            continue
        canonical, variants = line.split(":", 1)
        entries[canonical.strip().lower()] = tuple(v.strip() for v in variants.split(",") if v.strip())
    return entries


# -- numbers -------------------------------------------------------------------------------------------

SINO_DIGITS = {"일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "칠": 7, "팔": 8, "구": 9}
SMALL_UNITS = {"십": 10, "백": 100, "천": 1000}
BIG_UNITS = {"만": 10_000, "억": 100_000_000}
NATIVE_TENS = {
    "열": 10,
    "스물": 20,
    "스무": 20,
    "서른": 30,
    "마흔": 40,
    "쉰": 50,
    "예순": 60,
    "일흔": 70,
    "여든": 80,
    "아흔": 90,
}
NATIVE_ONES = {
    "하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "석": 3, "서": 3, "넷": 4, "네": 4, "넉": 4, "너": 4,
    "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9,
}  # fmt: skip
# Whole words that are a count of days (or months).
DAY_WORDS = {
    "하루": "1일", "이틀": "2일", "사흘": "3일", "나흘": "4일", "닷새": "5일", "엿새": "6일", "이레": "7일",
    "여드레": "8일", "아흐레": "9일", "열흘": "10일", "열나흘": "14일", "보름": "15일", "일주일": "7일",
    "반년": "6개월", "반나절": "4시간",
}  # fmt: skip
# counter as written -> canonical unit
UNITS = {
    "원": "원", "달러": "달러", "불": "달러", "일": "일", "날": "일", "개월": "개월", "달": "개월", "년": "년",
    "해": "년", "주일": "주일", "주": "주", "시간": "시간", "시": "시", "분": "분", "초": "초", "번": "회",
    "회": "회", "차례": "회", "권": "권", "명": "명", "사람": "명", "개": "개", "대": "대", "장": "장",
    "층": "층", "곳": "곳", "군데": "곳", "세": "세", "살": "세", "끼": "끼", "켤레": "켤레", "가지": "가지",
    "자": "자", "점": "점", "퍼센트": "%", "프로": "%", "%": "%", "기가바이트": "gb", "기가": "gb", "gb": "gb",
    "메가바이트": "mb", "메가": "mb", "mb": "mb", "테라바이트": "tb", "테라": "tb", "tb": "tb",
    "영업일": "영업일", "세대": "세대", "인": "인", "박": "박", "월": "월",
    "건": "건", "통": "통", "쪽": "쪽", "마리": "마리", "잔": "잔",
}  # fmt: skip
# Counters only native numerals take (석 달, 스무 날); a Sino-Korean word before them is something else.
NATIVE_ONLY = {"날", "달", "해", "사람", "살", "번", "차례", "끼", "켤레", "가지", "군데"}
# Counters a native numeral may take (not 일, 원, 월: 한 일 is "the work done", not one day).
NATIVE_UNITS = NATIVE_ONLY | {"권", "명", "시간", "시", "개", "개월", "대", "장", "곳", "주", "주일", "층"}
# Issue #27: counters of cases, copies, pages, animals, cups (한 건, 두 통, 세 쪽), native or Sino-Korean.
NATIVE_UNITS |= {"건", "통", "쪽", "마리", "잔"}
# A lone Sino-Korean digit is also a common syllable (이월, 사원, 이번, 오분): only these units are safe after it.
SAFE_AFTER_LONE_SINO = {"년", "개월", "시간", "퍼센트"}
# Counters that may follow a native numeral without a space (석달, 세번); others need the space (세 대 ≠ 세대).
NATIVE_GLUED_OK = {"달", "번", "시간", "권", "명", "개", "개월", "날", "해", "차례", "시", "끼", "가지", "곳", "군데"}
# Particles and suffixes that may follow a counter: a counter followed by other Hangul is part of another word.
_AFTER = r"(?=[^가-힣]|$|에|의|이|가|은|는|을|를|도|만|까지|동안|씩|째|마다|간|내|부터|안|과|와|로|으로|이나|나|짜리|치|당|후|전|뒤|전후|이상|이하|미만|이내|밖|정도|쯤|이요|인가|인데|이에|이며|이고|이다|입니|이었|였|예요|이에요)"
_UNIT_ALT = "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True))
_NUM_ATOM = r"(?:\d+(?:,\d{3})*(?:\.\d+)?|[일이삼사오육칠팔구])"
_NUMERAL = rf"(?:{_NUM_ATOM}?[십백천만억](?:\s(?=[일이삼사오육칠팔구\d]))?)+{_NUM_ATOM}?|{_NUM_ATOM}"
_NUMBER_RE = re.compile(rf"(?<![{_HANGUL}\d.,])({_NUMERAL})\s?({_UNIT_ALT}){_AFTER}", re.IGNORECASE)
_ONES_ALT = "|".join(sorted(NATIVE_ONES, key=len, reverse=True))
_NATIVE_RE = re.compile(
    rf"(?<![{_HANGUL}])((?:{'|'.join(NATIVE_TENS)})(?:{_ONES_ALT})?|(?:{_ONES_ALT}))"
    rf"(\s?)({'|'.join(sorted(NATIVE_UNITS, key=len, reverse=True))}){_AFTER}"
)
_DAY_RE = re.compile(rf"(?<![{_HANGUL}])({'|'.join(sorted(DAY_WORDS, key=len, reverse=True))}){_AFTER}")
_DATE_RE = re.compile(r"(?<![\d.])((?:19|20)\d\d)\s?[./-]\s?(\d{1,2})(?:\s?[./-]\s?(\d{1,2}))?\.?(?![\d.])")
_CLOCK_RE = re.compile(r"(오후|저녁|밤)\s?(\d{1,2})시")


def parse_numeral(text: str) -> int | float | None:
    """Digits and Sino-Korean numerals with 십/백/천/만/억: 1만 2천 = 만 이천 = 12000, 십사 = 14, 2.5 = 2.5."""
    total = section = 0.0
    num: float | None = None
    for piece in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?|[일이삼사오육칠팔구십백천만억]", text):
        if piece in SINO_DIGITS:
            num = SINO_DIGITS[piece]
        elif piece in SMALL_UNITS:
            section += (1 if num is None else num) * SMALL_UNITS[piece]
            num = None
        elif piece in BIG_UNITS:
            section += 0 if num is None else num
            total += (section or 1) * BIG_UNITS[piece]
            section, num = 0.0, None
        else:
            num = float(piece.replace(",", ""))
    value = total + section + (num or 0)
    return int(value) if value == int(value) else value


def _number(match: re.Match[str]) -> str:
    numeral, unit = match.group(1), match.group(2)
    canonical = UNITS.get(unit.lower(), UNITS.get(unit))
    if canonical is None:
        return match.group(0)
    lone_sino = len(numeral) == 1 and numeral in SINO_DIGITS
    if lone_sino and unit not in SAFE_AFTER_LONE_SINO:
        return match.group(0)
    if unit in NATIVE_ONLY and not re.search(r"\d", numeral):
        return match.group(0)
    if unit == "월" and not re.search(r"\d", numeral) and len(numeral) < 2:  # 이월 = carry over
        return match.group(0)
    if numeral in BIG_UNITS and unit != "원":  # 만 alone is also "only" (그것만)
        return match.group(0)
    value = parse_numeral(numeral)
    if value is None:
        return match.group(0)
    if canonical == "주일":
        return f"{value * 7}일"
    return f"{value}{canonical}"


def _native(match: re.Match[str]) -> str:
    word, space, unit = match.group(1), match.group(2), match.group(3)
    if not space and unit not in NATIVE_GLUED_OK:
        return match.group(0)
    value = 0
    for tens, n in NATIVE_TENS.items():
        if word.startswith(tens):
            value, word = n, word[len(tens) :]
            break
    if word:
        if word not in NATIVE_ONES:
            return match.group(0)
        value += NATIVE_ONES[word]
    canonical = UNITS[unit]
    if canonical == "주일":
        return f"{value * 7}일"
    return f"{value}{canonical}"


def _clock(match: re.Match[str]) -> str:
    hour = int(match.group(2))
    return f"{match.group(1)} {hour + 12 if hour < 12 else hour}시"


# -- codes, versions, short years, halves (issue #27: the detail that tells near-duplicates apart is often
# written another way in the question than in the passage) -------------------------------------------------
# A model or product code: SX-200, SX 200 and SX200 are one token (sx200). The spaced form only for two or more
# capitals and two or more digits not followed by a counter (GPU 2장, A 4개 stay as they are).
_CODE_HYPHEN_RE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{1,6})[-‐_](\d[\d.]*)(?![\d])")
_CODE_SPACE_RE = re.compile(rf"(?<![A-Za-z0-9])([A-Z]{{2,6}}) (\d{{2,6}})(?![\d.,%])(?!\s?(?:{_UNIT_ALT}){_AFTER})")
# Versions: 버전 2.1, 2.1 버전, ver. 2.1, V 2.1, v2.1.0 -> v2.1
_VERSION_RE = re.compile(
    r"(?:(?<![A-Za-z])(?:버전|ver\.?|version|[vV]\.?)\s?(\d+(?:\.\d+)*)(?![\d.]))|(?:(?<![\d.])(\d+(?:\.\d+)+)\s?버전)"
)
# A two-digit year where only a year can be meant: '24년, 24년 7월, 24년도, 24년 개정, 24년 상반기.
_SHORT_YEAR_RE = re.compile(
    r"(?<![\d.,])(?:'(\d\d)년|(\d\d)년(?=도|\s?\d{1,2}월|\s?(?:개정|상반기|하반기|기준|시행|이후|부터)))"
)
_YEAR_DO_RE = re.compile(r"((?:19|20)\d\d)년도")
# Halves after a converted number: 1년 반 = 1년 6개월, 2시간 반 = 2시간 30분, 3개월 반 = 3개월 15일.
_HALF_RE = re.compile(rf"(\d+)(년|개월|시간|시)\s?반{_AFTER}")
_HALF = {"년": "6개월", "개월": "15일", "시간": "30분", "시": "30분"}
# 당일치기 (a day trip) is one day; 당일 alone is also "that same day" and is left alone.
_DAYTRIP_RE = re.compile(r"당일치기")


def _version(match: re.Match[str]) -> str:
    number = match.group(1) or match.group(2)
    while number.endswith(".0") and number.count(".") > 0:
        number = number[:-2]
    return f"v{number}"


# A spelled-out Sino-Korean number of two or more syllables with 십/백/천, as a word of its own before another
# word (백사십 학점, 삼십 명): digits, whatever the counter (normalize_numbers converts only known units).
_SINO_WORD_RE = re.compile(r"(?<![가-힣])([일이삼사오육칠팔구십백천]*[십백천][일이삼사오육칠팔구십백천]*)(?=\s[가-힣])")


def _sino_word(match: re.Match[str]) -> str:
    value = parse_numeral(match.group(1)) if len(match.group(1)) >= 2 else None
    return str(value) if value is not None else match.group(0)


def normalize_details(text: str) -> str:
    """Codes, versions, short years, halves and day trips in one canonical spelling (after the numbers)."""
    text = _DAYTRIP_RE.sub("1일", text)
    text = _SINO_WORD_RE.sub(_sino_word, text)
    text = _CODE_HYPHEN_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}", text)
    text = _CODE_SPACE_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}", text)
    text = _VERSION_RE.sub(_version, text)
    text = _SHORT_YEAR_RE.sub(lambda m: f"20{m.group(1) or m.group(2)}년", text)
    text = _YEAR_DO_RE.sub(r"\1년", text)
    return _HALF_RE.sub(lambda m: f"{m.group(1)}{m.group(2)} {_HALF[m.group(2)]}", text)


def normalize_numbers(text: str) -> str:
    text = _DATE_RE.sub(
        lambda m: f"{m.group(1)}년 {int(m.group(2))}월" + (f" {int(m.group(3))}일" if m.group(3) else ""), text
    )
    text = _DAY_RE.sub(lambda m: DAY_WORDS[m.group(1)], text)
    text = _NATIVE_RE.sub(_native, text)
    text = _NUMBER_RE.sub(_number, text)
    return _CLOCK_RE.sub(_clock, text)


class Normalizer:
    """Lexicon, then numbers: what both the indexer and the query analyser run first."""

    def __init__(self, extra: Mapping[str, Iterable[str]] | None = None) -> None:
        entries: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in LEXICON.items()}
        for canonical, variants in (extra or {}).items():
            entries[canonical] = (*entries.get(canonical, ()), *variants)
        self.lexicon = Lexicon(entries)

    def __call__(self, text: str, details: bool = True) -> str:
        """`details=False` (codes, versions, short years, halves left as written) is for the ablation."""
        text = normalize_numbers(self.lexicon.apply(text))
        return normalize_details(text) if details else text
