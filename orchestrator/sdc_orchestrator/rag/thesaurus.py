"""A small general-purpose Korean thesaurus for workplace questions: everyday words -> the terms policies use.

Why: users ask in their own words (그만두다, 암호, 장인어른, 집에서 일하다) and company documents are
written in the formal, mostly Sino-Korean register (퇴사, 비밀번호, 배우자의 부모, 재택근무). CoNg's
morpheme similarity bridges some of these pairs but not most: it models which words occur in the same
contexts, so 아내 sits nearer 남편 than 배우자, and rare compounds have no usable vector at all. Every
Korean style guide and 순화어 list pairs the two registers, and the pairs are few and stable, so a short
hand-written list of them is a cheap signal that ships with the code.

What is in it: 고유어 and colloquial words with their Sino-Korean or loanword counterparts, kinship terms
with the hypernyms rules use (장모 -> 배우자의 부모, 할머니 -> 조부모), and a few everyday descriptions
of common office objects (이동식 메모리 -> USB 저장장치). It is general office vocabulary (HR, IT,
facilities, finance, security), not a list of any evaluation set's answers; a deployment adds its own
jargon with `SDC_RAG_THESAURUS_FILE` (same format).

Two sources, asked for apart: the groups below were written by someone who had read the project's
evaluation questions, so on their own they overstate what a list of words does for questions nobody
anticipated (fresh paraphrases: hit@5 0.74). `lexicon.txt`, the workplace lexicon (some 330 groups), was
written the way a deployment would write its own: from the vocabulary of the documents (each policy term
the passages use, and the everyday ways people say it) and general Korean, never from questions; with
it the fresh paraphrases reach hit@5 0.94 (benchmarks/REPORT.md). Being broad, its terms weigh
`Weights.lexicon_weight` of a hand-written group's.

How it is used (`retriever.py`): only on the question side, so stored passages and ingestion are
unchanged (a corpus-side copy of the same pairs would add index terms to every passage for the same
matches). A group fires when all the words of one of its left-hand forms are among the question's terms;
its right-hand terms join the BM25 query below the words the user wrote (`Weights.thesaurus`), and a
passage that has them counts the triggering words as partly covered (`Weights.thesaurus_cover`). Hits
list such matches as "question word~passage word" in `related`, like CoNg matches.

Format, one group a line: `left | left = right right`. Each side is plain Korean, analysed with the
same `korean.analyze` as questions and passages, so 그만두다 and 그만두려면 both become 그만두. A
left-hand form of several words (집 일: 집에서 일하다) needs all of them in the question.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from sdc_orchestrator.rag.korean import analyze

LEXICON = Path(__file__).with_name("lexicon.txt")
GROUPS = """
# kinship: what HR rules say (배우자, 부모, 자녀, 조부모, 형제자매)
아내 | 남편 | 부인 | 와이프 | 집사람 | 신랑 | 신부 = 배우자
아버지 | 어머니 | 아빠 | 엄마 | 부친 | 모친 | 어버이 = 부모 가족
장인 | 장모 | 장인어른 | 장모님 | 시아버지 | 시어머니 | 시부모 | 처가 | 시댁 = 배우자 부모
할아버지 | 할머니 | 외할아버지 | 외할머니 | 조부 | 조모 | 친할머니 | 친할아버지 = 조부모 외조부모
아이 | 아기 | 애기 | 아들 | 딸 | 자식 | 애들 | 갓난아기 = 자녀
형 | 오빠 | 누나 | 언니 | 남동생 | 여동생 | 친형 | 친누나 = 형제자매
손자 | 손녀 | 손주 = 손자녀
처남 | 처제 | 시누이 | 도련님 | 형부 | 제부 | 매형 | 올케 = 배우자 형제자매
삼촌 | 이모 | 고모 | 외삼촌 | 숙부 = 친척
# life events
돌아가시다 | 죽다 | 별세 | 숨지다 | 사별 = 사망
장례 | 장례식 | 초상 | 부고 | 문상 | 조문 = 사망 경조 조의
장가 | 시집 | 혼인 | 결혼식 = 결혼
낳다 | 태어나다 | 출생 | 해산 = 출산
임신부 | 임산부 | 애 가지다 = 임신
키우다 | 기르다 = 육아 양육
간호 | 병간호 | 돌보다 | 보살피다 | 수발 = 돌봄
아프다 | 앓다 | 병 | 몸살 | 감기 = 질병 병가
다치다 | 부상 | 넘어지다 = 사고 산업재해
병원 | 진찰 | 진료 = 의원 의사 진단
늙다 | 노인 | 나이 들다 = 노령
# work and employment
그만두다 | 관두다 | 사표 | 사직 | 회사 나가다 = 퇴사 퇴직 사직서
잘리다 | 해고 = 해고 징계
새로 들어오다 | 새로 오다 | 새내기 | 신참 | 막내 = 신입 입사
입사하다 | 회사 들어가다 = 입사
시험 기간 | 시용 기간 | 견습 | 인턴 기간 = 수습
쉬다 | 휴일 = 휴가 휴직 휴무
집 일 | 집 근무 | 집 업무 | 원격 근무 | 홈오피스 = 재택근무 재택
밤 | 한밤 | 새벽 | 심야 = 야간
밤 일 | 밤 근무 | 밤늦게 = 야간근무 야근
늦게 남다 | 늦게까지 | 잔업 | 초과 근무 = 연장근무 야근
주말 일 | 휴일 일 | 주말 근무 = 휴일 근무
교대 | 교대 근무 | 밤낮 바꾸다 = 교대 2교대 3교대 교대 근무자
출퇴근 | 출근 퇴근 = 출근 퇴근 통근
상사 | 윗사람 | 매니저 | 팀장님 = 팀장
허락 | 허가 | 결재 | 오케이 = 승인
미리 | 사전 = 사전
알리다 | 얘기하다 | 통보 = 통보 신고 보고
발령 | 전근 | 전출 | 전보 | 지방 근무 = 발령 이동
다른 도시 | 지방 | 타지역 = 타지역 지역
진급 = 승진
고과 | 인사고과 = 평가
경력자 | 경력직 = 경력 직원
# pay and benefits
돈 = 비용 금액 수당 지원금
월급 | 봉급 | 급료 | 페이 = 급여
월급날 | 월급일 | 페이데이 = 급여 지급
월급 나오다 | 돈 나오다 | 급여 나오다 = 유급 무급 지급
돈 더 | 더 주다 | 웃돈 | 추가 수당 = 가산 수당
보너스 | 인센티브 | 상여 = 성과급 상여금
회사 돈 | 회삿돈 | 회사 부담 | 공짜 | 무료 = 지원 회사 비용 무료
내 주다 | 대 주다 | 부담하다 | 돈 내다 = 지원 부담 지급
영어 | 일본어 | 중국어 = 외국어
학원 | 강의 | 수업 | 강좌 | 인강 = 교육 수강 학원비
책 | 서적 = 도서
집 구하다 | 집 얻다 | 살 곳 | 숙소 | 방 구하다 | 집세 | 월세 = 사택 기숙사 주거 주택
# IT
컴퓨터 | 피씨 | 데스크톱 | 본체 = pc 노트북
랩톱 | 랩탑 = 노트북
암호 | 비번 | 패스워드 | 로그인 암호 = 비밀번호
들어가다 | 로그인하다 | 접속하다 = 로그인 접속
못 들어가다 | 막히다 | 잠기다 | 안 열리다 = 잠금 잠기 차단
붙다 | 연결하다 | 접속 = 접속 연결
붙이다 | 첨부하다 = 첨부
붙여 넣다 | 복사하다 | 입력하다 | 넣다 = 입력
깔다 | 설치하다 | 인스톨 = 설치
지우다 | 없애다 | 날리다 = 삭제
되살리다 | 살리다 | 되돌리다 | 복원 | 되찾다 = 복구
바꾸다 | 새것 = 교체 변경
고장 | 망가지다 | 먹통 | 에러 = 장애 오류 수리
멈추다 | 다운 | 중단되다 | 서버 죽다 = 장애 중단
전부 | 전체 | 모든 = 전사 전체
끄다 = 전원 종료 끄
켜다 = 전원 켜
이동식 메모리 | 메모리 스틱 | 외장 하드 | 외장하드 | 이동식 디스크 | 유에스비 = usb 저장장치
꽂다 | 끼우다 = 연결
해킹 | 해커 | 바이러스 | 랜섬웨어 | 악성 프로그램 | 털리다 = 보안 사고 침해 악성코드
수상하다 | 의심스럽다 | 가짜 = 의심 피싱
누르다 | 클릭하다 = 클릭 누르
편지 | 전자우편 | 메일함 = 메일
보내다 | 부치다 = 발송 전송 보내
크다 | 대용량 | 무겁다 = 용량
프로그램 | 앱 | 어플 | 툴 | 유틸리티 = 소프트웨어 프로그램
파일 공유 | 공유 프로그램 | 피투피 | 웹하드 = 클라우드 저장소 토렌트
외국 | 해외 | 다른 나라 | 외국 나가다 = 해외 출국
회사 네트워크 | 회사 망 | 회사 인터넷 | 내부망 = 사내망 vpn
온라인 | 접속 상태 = 접속 메신저
챗봇 | 인공지능 | 생성형 | 대화형 ai = 생성형 ai chatgpt llm
프로그램 코드 | 코드 | 소스 = 소스 코드
휴대폰 | 핸드폰 | 폰 | 스마트폰 | 휴대전화 = 휴대폰
프린터 | 프린트 | 인쇄기 | 뽑다 = 복합기 출력 인쇄
미팅 | 회의하다 = 회의
화상 | 영상 통화 = 화상회의
# facilities
차 | 자동차 | 자가용 | 승용차 | 내 차 = 차량
몰다 | 운전하다 = 운전 차량
세우다 | 차 세우다 = 주차
채우다 | 배터리 채우다 = 충전
빼다 | 차 빼다 = 옮기다 이동
운동 | 헬스 | 헬스장 | 체육관 | 운동하다 = 체력단련실 피트니스센터 피트니스
밥 | 식사 | 끼니 | 점심 | 저녁 | 아침밥 = 식사 식당 식대
밥값 | 식비 | 밥 값 = 식대
손님 | 고객 | 바이어 | 거래 상대 = 고객 거래처 방문객
손님 대접 | 대접 | 거래처 식사 = 접대
출입 카드 | 카드키 | 출입증 | 사원증 | 신분증 = 출입카드 사원증 출입증
놓다 | 깜빡하다 = 두다
불 | 불나다 | 화재 | 연기 = 화재 소방
피하다 | 대피하다 | 도망가다 = 대피 집결지
담배 | 흡연 | 전자담배 | 피우다 = 흡연 흡연 구역
택배 | 소포 | 우편물 = 택배 우편실
셔틀 | 회사 버스 | 출근 버스 | 셔틀버스 = 통근버스
휴식 공간 | 라운지 | 쉼터 = 휴게실
에어컨 | 히터 | 냉방 | 난방 = 냉난방
자리 | 책상 | 좌석 = 좌석 자리
물건 | 비품 | 소모품 = 물품 사무용품
공장 | 생산 현장 | 생산 라인 | 현장 = 생산 구역 사업장 생산 라인
사진 | 사진 찍다 | 카메라 | 찍다 = 촬영 카메라
# finance
선물 | 상품권 | 뇌물 | 금품 = 선물 금품
명절 | 설날 | 추석 | 설 = 명절
회사 카드 | 법카 = 법인카드
돌려주다 | 반납하다 | 돌려드리다 = 반납 반환
돌려받다 | 환불 = 환급 돌려받
빌리다 | 대여 | 빌려주다 = 대여 대출
사다 | 구입하다 | 구매하다 | 장만하다 = 구매 구입
세금 = 세금계산서 연말정산
# security
잃어버리다 | 잃다 | 없어지다 | 분실하다 = 분실
훔치다 | 도둑 | 도난 = 도난 분실
빼돌리다 | 유출하다 = 유출
버리다 | 파쇄 | 없애다 = 폐기 파기
가지고 나가다 | 들고 나가다 | 밖으로 보내다 = 반출
가지고 오다 | 들고 오다 = 반입
"""


@dataclass(frozen=True)
class Group:
    """One line: alternative triggers (each a set of index terms that must all be in the question),
    and the terms they add to the query."""

    triggers: tuple[frozenset[str], ...]
    related: tuple[tuple[str, ...], ...]  # per right-hand word, its index terms


def parse(text: str) -> list[Group]:
    """Groups from `left | left = right right` lines, each side analysed like the text it meets."""
    groups = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        left, right = line.split("=", 1)
        triggers = tuple(
            terms for form in left.split("|") if (terms := frozenset(t.text for t in analyze(form) if not t.joined))
        )
        related = tuple(found for word in right.split() if (found := _word_terms(word)))
        if triggers and related:
            groups.append(Group(triggers, related))
    return groups


def _word_terms(word: str) -> tuple[str, ...]:
    """A right-hand word's index terms: itself when Kiwi keeps it whole; else its parts of two or more
    letters and their joined pairs (체력단련실: 체력, 단련, 체력단련, 단련실), as passages are indexed."""
    terms = analyze(word)
    plain = [t.text for t in terms if not t.joined]
    if len(plain) == 1:
        return (plain[0],)
    return tuple(dict.fromkeys(t.text for t in terms if t.joined or len(t.text) > 1))


@functools.cache
def groups(builtin: bool = True, lexicon: bool = True) -> tuple[Group, ...]:
    """The built-in groups with `SDC_RAG_THESAURUS_FILE`'s, and the workplace lexicon (`lexicon.txt`);
    parsed once, shared. The retriever asks for the two apart, to weigh the broad lexicon lower."""
    text = (GROUPS if builtin else "") + ("\n" + LEXICON.read_text(encoding="utf-8") if lexicon else "")
    path = os.environ.get("SDC_RAG_THESAURUS_FILE")
    if path and builtin:
        text += "\n" + Path(path).read_text(encoding="utf-8")
    return tuple(parse(text))


@functools.cache
def _by_word(builtin: bool = True, lexicon: bool = True) -> dict[str, list[tuple[int, int, frozenset[str]]]]:
    """Each trigger under each of its words, with its group's number and its place in the group: a
    question looks up only its own words instead of testing every trigger."""
    index: dict[str, list[tuple[int, int, frozenset[str]]]] = {}
    for number, group in enumerate(groups(builtin, lexicon)):
        for place, trigger in enumerate(group.triggers):
            for word in trigger:
                index.setdefault(word, []).append((number, place, trigger))
    return index


def expand(
    terms: set[str], builtin: bool = True, lexicon: bool = True
) -> list[tuple[frozenset[str], tuple[tuple[str, ...], ...]]]:
    """For the question's terms: (the words that fired, the related terms) of each group that fires
    (its first matching trigger as written), in the order the groups are written."""
    fired: dict[int, tuple[int, frozenset[str]]] = {}
    index, table = _by_word(builtin, lexicon), groups(builtin, lexicon)
    for word in terms:
        for number, place, trigger in index.get(word, ()):
            if place < fired.get(number, (len(table[number].triggers), frozenset()))[0] and trigger <= terms:
                fired[number] = (place, trigger)
    return [(fired[number][1], table[number].related) for number in sorted(fired)]
