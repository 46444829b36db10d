"""The handoff auto-detect scoring (handlers/autodetect.py), English and Russian."""
import pytest

from handlers import autodetect
from handlers.autodetect import score_dialog, score_text

T = 0.7


@pytest.mark.parametrize("text", [
    "I want to talk to a human",
    "can I speak with a real person?",
    "Operator please",
    "agent",
    "connect me to someone from support",
    "Позовите оператора",
    "хочу поговорить с человеком",
    "соедините меня с живым человеком",
    "Нужен менеджер",
    "оператор!",
])
def test_explicit_requests_hand_off(text):
    verdict = score_text(text, T)
    assert verdict.should_handoff and "explicit_request" in verdict.reasons, (text, verdict)


@pytest.mark.parametrize("text", [
    "What are your opening hours?",
    "How long does delivery take to Busan?",
    "Спасибо, всё понятно",
    "Какой у вас адрес?",
    "thanks, that helps a lot",
])
def test_ordinary_questions_do_not(text):
    verdict = score_text(text, T)
    assert not verdict.should_handoff and verdict.score == 0, (text, verdict)


def test_frustration_adds_up_but_alone_is_not_enough():
    one = score_text("this is useless", T)
    assert one.reasons == ["frustration"] and one.score == pytest.approx(0.3) and not one.should_handoff
    two = score_text("THIS IS USELESS AND STUPID!!!", T)
    assert two.score == pytest.approx(0.6) and not two.should_handoff
    ru = score_text("Вы тупой бот, бесполезно", T)
    assert "frustration" in ru.reasons


def test_repeated_failure_in_a_dialog():
    dialog = [
        ("visitor", "how do I change my delivery address"),
        ("assistant", "Sorry, I don't know."),
        ("visitor", "how do I change the delivery address?"),
        ("assistant", "I didn't understand that."),
        ("visitor", "how can I change my delivery address, I already asked"),
    ]
    verdict = score_dialog(dialog, T)
    assert verdict.should_handoff
    assert {"repeated_message", "bot_failed", "says_repeating"} <= set(verdict.reasons)


def test_russian_dialog_with_bot_failures():
    dialog = [
        ("visitor", "где мой заказ номер 15"),
        ("assistant", "Извините, я не знаю."),
        ("visitor", "где мой заказ номер 15???"),
        ("assistant", "Не понял вопрос."),
        ("visitor", "я же уже писал, где мой заказ номер 15"),
    ]
    verdict = score_dialog(dialog, T)
    assert verdict.should_handoff, verdict
    assert {"repeated_message", "bot_failed", "says_repeating"} <= set(verdict.reasons)


def test_threshold_and_weights_are_configurable(monkeypatch):
    assert score_text("this is useless", 0.3).should_handoff
    monkeypatch.setitem(autodetect.WEIGHTS, "explicit_request", 0.5)
    assert not score_text("I want a human", T).should_handoff
    assert score_text("I want a human", T).score == pytest.approx(0.5)


def test_score_is_capped_at_one():
    verdict = score_text("USELESS STUPID BOT!!! I want a human, again!", T)
    assert verdict.score == 1.0 and verdict.should_handoff


def test_russian_markers_match_words_not_parts_of_words():
    assert score_text("мой заказ поступил, спасибо", T).score == 0  # "поступил" is not "тупой"
