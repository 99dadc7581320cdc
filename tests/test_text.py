"""app.text.plain_text: the one rule for text that no field carries."""
import re

from app.text import plain_text

_CLASS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def test_plain_text_refuses_exactly_controls_del_and_lone_surrogates():
    # Every code point alone and inside ASCII or wider text: the ASCII path (str.isprintable)
    # and the regex path must both agree with the class the rule names.
    for c in map(chr, range(0x110000)):
        expected = _CLASS.search(c) is None
        assert plain_text(c) is expected, hex(ord(c))
        if ord(c) < 0x80 or not c.isprintable():  # the ASCII path, and the controls the wide one meets
            assert plain_text("ab" + c + "cd") is expected, hex(ord(c))
            assert plain_text("中" + c) is expected, hex(ord(c))
    assert plain_text("") and plain_text("EV1:6BFOXN*TS0BI$ZDFRH%5.NK8C:XR2+7WLV") and plain_text("张三 13")
    assert not plain_text("line\nbreak") and not plain_text("tab\there") and not plain_text("中\x00")
