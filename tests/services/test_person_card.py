"""The masked identity facts a scan shows: right for each number, remembered without the number."""
from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from app.demo import make_id_number
from app.services import registry
from app.services.vouchers import person_card


def _person(rt, id_number: str, name: str = "张丽"):
    return SimpleNamespace(name=name, id_number_enc=rt.fields.encrypt(id_number, registry.ID_CONTEXT))


def test_card_facts_follow_the_number_and_the_day(rt):
    number = make_id_number("110105", "1980-03-02", 7, 0)
    woman = _person(rt, number)
    man = _person(rt, make_id_number("320682", "2010-05-06", 8, 1), name="王小明")
    before = person_card(rt, woman, dt.date(2026, 3, 1))
    assert before["id_number_masked"] == "110" + "*" * 11 + number[-4:]
    assert (before["gender"], before["age"]) == ("female", 45)
    assert "丽" in before["name_masked"] and before["name_masked"] != "张丽"
    # Remembered per ciphertext, the age still follows the day asked about.
    assert person_card(rt, woman, dt.date(2026, 3, 2))["age"] == 46
    card = person_card(rt, man, dt.date(2026, 11, 22))
    assert (card["gender"], card["age"]) == ("male", 16)
    # A corrected number is a new ciphertext, so its own facts show.
    corrected = _person(rt, make_id_number("110105", "1990-03-02", 7, 1))
    card = person_card(rt, corrected, dt.date(2026, 3, 2))
    assert (card["gender"], card["age"]) == ("male", 36)


def test_a_number_is_decrypted_once_per_worker_and_never_kept(rt, monkeypatch):
    number = make_id_number("110105", "1980-03-02", 7, 0)
    person = _person(rt, number)
    first = person_card(rt, person, dt.date(2026, 3, 1))
    held = repr(rt.caches)
    assert number not in held and number[6:14] not in held

    def no_decrypt(*_a, **_k):
        raise AssertionError("decrypted again")
    monkeypatch.setattr(registry, "id_number", no_decrypt)
    assert person_card(rt, person, dt.date(2026, 3, 1)) == first
