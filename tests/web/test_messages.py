"""One code -> message table (messages.js) serves both pages and covers every refusal they can meet."""
from __future__ import annotations

import re
from pathlib import Path

from app.errors import CODES

STATIC = Path(__file__).resolve().parents[2] / "app" / "web" / "static"

# Every problem code POST /v1/scans can answer with (app/services/scans.py, app/api/auth.py).
SCAN_CODES = {
    "token_malformed", "token_signature_invalid", "token_unknown_key", "token_expired",
    "token_already_used", "token_revoked", "voucher_not_found", "voucher_suspended",
    "voucher_cancelled", "institution_inactive", "region_not_enrolled", "remote_care_filing_required",
    "pin_required", "pin_change_required", "rate_limited", "service_unavailable", "unauthorized", "forbidden",
}
# What else the scanner page meets: bad input, its photo decoder, sign-in.
SCANNER_EXTRA = {"invalid_request", "payload_too_large", "internal_error"}
# What the holder page's calls (me, qr-tokens, active-region, loss-report, records) can answer with.
HOLDER_CODES = {"unauthorized", "forbidden", "invalid_request", "voucher_not_found", "voucher_suspended",
                "voucher_cancelled", "region_not_enrolled", "rate_limited", "service_unavailable",
                "internal_error"}


def messages(table: str = "MESSAGES") -> dict[str, str]:
    source = (STATIC / "messages.js").read_text(encoding="utf-8")
    block = re.search(rf"const {table} = \{{(.*?)\n  \}};", source, re.S)
    assert block, f"{table} table not found in messages.js"
    return dict(re.findall(r'^\s*([a-z_]+):\s*"([^"]+)",\s*$', block.group(1), re.M))


def test_listed_codes_are_real_problem_codes():
    assert SCAN_CODES | SCANNER_EXTRA | HOLDER_CODES <= set(CODES)


def test_every_scan_refusal_has_a_message():
    missing = SCAN_CODES - set(messages())
    assert not missing, f"no message for {sorted(missing)}"


def test_every_code_the_pages_meet_has_a_message():
    assert not (SCANNER_EXTRA | HOLDER_CODES) - set(messages())


def test_messages_name_only_real_codes_and_speak_chinese():
    table = messages()
    assert set(table) <= set(CODES), f"unknown codes {sorted(set(table) - set(CODES))}"
    for code, text in table.items():
        assert re.search(r"[\u4e00-\u9fff]", text), code


def test_the_words_the_product_asked_for():
    table = messages()
    assert table["voucher_suspended"] == "电子凭证已挂失，请通过渠道重新验证后恢复"
    assert table["unauthorized"] == "登录已过期，请从渠道应用重新进入"
    assert table["rate_limited"] == "操作太频繁，请稍后再试"


def test_the_desk_is_told_what_a_pharmacy_may_scan_for():
    """POST /v1/scans answers `forbidden` only for a purpose the institution's kind may not use
    (docs/decisions.md, "Scan purposes by institution kind"): the desk reads which, and what to do."""
    assert messages("DESK_MESSAGES")["forbidden"] == \
        "本机构不能办理该用途的业务（定点零售药店仅限药店购药和查询），请改选用途后重新扫码核验"


# The refusals a scan writes into the voucher's records (scans._refused): the voucher's and a
# presenting guardian's state, the rules of _check, and a code used twice.
RECORDED_SCAN_CODES = {"voucher_suspended", "voucher_cancelled", "token_revoked", "region_not_enrolled",
                       "remote_care_filing_required", "pin_required", "pin_change_required", "pin_locked",
                       "token_already_used", "forbidden"}


def test_a_refused_scan_in_the_holders_records_is_told_to_the_holder():
    """The holder reads their records: a refusal there says what happened, not what the desk
    should do next ("请让参保人…", "请勿受理")."""
    reasons = messages("RECORD_MESSAGES")
    assert RECORDED_SCAN_CODES <= set(reasons), sorted(RECORDED_SCAN_CODES - set(reasons))
    assert set(reasons) <= set(CODES)
    for code, text in reasons.items():
        assert re.search(r"[\u4e00-\u9fff]", text) and not re.search("请|参保人|受理", text), (code, text)
    assert "EV.recordReason(detail.result)" in (STATIC / "holder.js").read_text(encoding="utf-8")


def test_page_scripts_keep_no_table_of_their_own():
    for name in ("holder.js", "scanner.js"):
        source = (STATIC / name).read_text(encoding="utf-8")
        copied = [code for code in CODES if re.search(rf"\b{code}\s*:\s*\"", source)]
        assert not copied, f"{name} redefines messages for {copied}"


def test_every_code_the_document_lists_for_the_pages_calls_has_a_message():
    """The pages' calls are found in their scripts; whatever /openapi.json says those operations
    can answer, the pages can say in words (SPEC §8: every refusal reason in plain words)."""
    from app.api.openapi import document
    paths = document()["paths"]
    called = set()
    for script in ("holder.js", "scanner.js"):
        called |= set(re.findall(r'"(/v1/[a-z/-]+|/scanner/decode)"', (STATIC / script).read_text(encoding="utf-8")))
    assert {"/v1/me/qr-tokens", "/v1/scans", "/v1/oauth/token", "/scanner/decode"} <= called
    table = messages()
    for path in called:
        for method, operation in paths[path].items():
            for response in operation["responses"].values():
                codes = response["description"].removeprefix("codes: ").split(", ")
                if response["description"].startswith("codes: "):
                    missing = set(codes) - set(table)
                    assert not missing, f"{method.upper()} {path}: no message for {sorted(missing)}"
