"""Does a visitor need a human? A small, documented, configurable scoring of text
(English and Russian), used by `handoff:auto-detect` (docs/handoff.md).

Each signal found adds its weight (from `WEIGHTS`) to the score, capped at 1.0;
`should_handoff` is `score >= threshold` (Settings.handoff_threshold, env
HUB_HANDOFF_THRESHOLD, default 0.7). Signals:

- `explicit_request`: the visitor asks for a human/operator/agent.
- `frustration`: insults to the bot, "useless", "doesn't help", shouting (CAPS,
  "!!!"), per marker found (at most `MAX_FRUSTRATION_HITS` count).
- `repeated_message`: the visitor repeats (nearly) the same message (dialog mode).
- `bot_failed`: the bot said it doesn't know / didn't understand, per reply
  among the last few (at most `MAX_BOT_FAILURES` count) (dialog mode).
- `says_repeating`: the visitor says they are repeating themselves.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

WEIGHTS = {
    "explicit_request": 0.8,
    "frustration": 0.3,
    "repeated_message": 0.4,
    "bot_failed": 0.3,
    "says_repeating": 0.3,
}
MAX_FRUSTRATION_HITS = 2
MAX_BOT_FAILURES = 2
# Two visitor messages "repeat" when at least SIMILARITY of the shorter one's words
# (it having at least MIN_WORDS) are in the other.
SIMILARITY = 0.8
MIN_WORDS = 3
RECENT = 6  # messages of each side looked at in dialog mode

_EXPLICIT = [
    # English
    r"\b(talk|speak|chat|connect|put)\w*\s+(me\s+)?(to|with|through\s+to)\s+(a\s+|an\s+|some\s+)?(real\s+|live\s+)?"
    r"(human|person|people|agent|operator|someone|somebody|representative|manager|support)",
    r"\b(real|live|actual)\s+(human|person|agent|operator)",
    r"\b(human|operator|agent|representative)\s*(please|pls|now)\b",
    r"\b(give|get|put)\s+me\s+(through\s+to\s+)?(a\s+|an\s+)?(human|person|agent|operator|manager)",
    r"\bi\s+(want|need)\s+(a\s+|an\s+|to\s+talk\s+to\s+a\s+)?(human|person|agent|operator|manager)",
    r"^\s*(human|operator|agent)\s*[.!?]*\s*$",
    # Russian
    r"(жив\w*|реальн\w*|настоящ\w*)\s+(человек|оператор|сотрудник)",
    r"(позов|соедин|переключ|свяж)\w*\s+(меня\s+)?(с\s+)?(оператор|человек|менеджер|сотрудник|специалист)",
    r"(хочу|нужен|нужно|дайте|давайте)\s+(\w+\s+)?(оператор|человек|менеджер|специалист)",
    r"(поговорить|общаться|говорить)\s+с\s+(человеком|оператором|менеджером|сотрудником)",
    r"^\s*(оператор|человек|менеджер)\s*[.!?]*\s*$",
]
_FRUSTRATION = [
    r"\b(useless|stupid|dumb|idiot\w*|ridiculous|terrible|awful|horrible|pathetic|annoying)\b",
    r"\b(doesn'?t|does\s+not|don'?t|do\s+not|isn'?t|is\s+not)\s+(help|work|understand)\w*",
    r"\bnot\s+helpful\b", r"\bwtf\b", r"\bwaste\s+of\s+(my\s+)?time\b", r"\bfed\s+up\b",
    r"\bбесполезн\w*", r"\bтуп(ой|ая|ые|ица|ит\w*)\b", r"\bидиот\w*", r"\bужас\w*", r"\bкошмар\w*",
    r"\bбесит", r"\bдостал\w*", r"\bне\s+помога\w*", r"\bне\s+понима\w*", r"\bне\s+работа\w*",
    r"\bнадоел\w*", r"\bиздева\w*",
    r"!{3,}", r"\?!|!\?",
]
_SAYS_REPEATING = [
    r"\b(again|i\s+(already|just)\s+(said|told|asked|wrote)|as\s+i\s+said|for\s+the\s+\w+\s+time)\b",
    r"(ещё|еще)\s+раз", r"я\s+(же\s+)?(уже\s+)?(сказал|писал|спрашивал|говорил)\w*", r"повторяю",
    r"в\s+(который|сотый|десятый)\s+раз",
]
_BOT_FAILED = [
    r"\b(i\s+don'?t|i\s+do\s+not)\s+(know|understand)", r"\bi'?m\s+not\s+sure\b", r"\bi\s+am\s+not\s+sure\b",
    r"\b(didn'?t|did\s+not)\s+(understand|get\s+that)", r"\b(can'?t|cannot)\s+help\b", r"\bsorry,?\s+i\b",
    r"не\s+знаю", r"не\s+понял\w*", r"не\s+могу\s+помочь", r"не\s+уверен\w*", r"затрудняюсь",
]


def _compile(patterns: list[str]) -> list[re.Pattern]:
    return [re.compile(p, re.IGNORECASE | re.UNICODE) for p in patterns]


EXPLICIT, FRUSTRATION, SAYS_REPEATING, BOT_FAILED = map(_compile, (_EXPLICIT, _FRUSTRATION, _SAYS_REPEATING, _BOT_FAILED))


@dataclass(frozen=True)
class Verdict:
    should_handoff: bool
    score: float
    reasons: list[str]


def _hits(patterns: list[re.Pattern], text: str) -> int:
    return sum(1 for p in patterns if p.search(text))


def _shouting(text: str) -> bool:
    words = [w for w in re.findall(r"[^\W\d_]{4,}", text)]
    return len(words) >= 2 and sum(w.isupper() for w in words) >= max(2, len(words) // 2)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _similar(a: str, b: str) -> bool:
    wa, wb = _words(a), _words(b)
    shorter = min(len(wa), len(wb))
    if shorter < MIN_WORDS:
        return False
    return len(wa & wb) / shorter >= SIMILARITY


def _signals(visitor_texts: list[str], bot_texts: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    last = visitor_texts[-1] if visitor_texts else ""
    if _hits(EXPLICIT, last):
        found["explicit_request"] = WEIGHTS["explicit_request"]
    frustration = _hits(FRUSTRATION, last) + _shouting(last)
    if frustration:
        found["frustration"] = WEIGHTS["frustration"] * min(frustration, MAX_FRUSTRATION_HITS)
    if _hits(SAYS_REPEATING, last):
        found["says_repeating"] = WEIGHTS["says_repeating"]
    if len(visitor_texts) >= 2 and any(_similar(last, earlier) for earlier in visitor_texts[:-1]):
        found["repeated_message"] = WEIGHTS["repeated_message"]
    failures = sum(1 for t in bot_texts if _hits(BOT_FAILED, t))
    if failures:
        found["bot_failed"] = WEIGHTS["bot_failed"] * min(failures, MAX_BOT_FAILURES)
    return found


def _verdict(found: dict[str, float], threshold: float) -> Verdict:
    score = round(min(1.0, sum(found.values())), 3)
    return Verdict(should_handoff=score >= threshold, score=score, reasons=sorted(found))


def score_text(text: str, threshold: float) -> Verdict:
    """Score one visitor message on its own."""
    return _verdict(_signals([text], []), threshold)


def score_dialog(messages: list[tuple[str, str]], threshold: float) -> Verdict:
    """Score a dialog from its (sender, text) messages, oldest first: the visitor's
    latest message, their recent ones (repetition) and the bot's recent replies."""
    visitor = [t for s, t in messages if s == "visitor"][-RECENT:]
    bot = [t for s, t in messages if s == "assistant"][-RECENT:]
    return _verdict(_signals(visitor, bot), threshold)
