"""The holder and scanner pages: served, in Chinese, self-contained, behind a strict CSP."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "app" / "web" / "static"
PAGES = {"/m/": ("holder.js", ["医保电子凭证", "使用记录", "加载更多", "挂失", "参保地",
                                "请从微信、支付宝或银行App进入医保电子凭证"]),
         "/scanner/": ("scanner.js", ["扫码核验", "机构登录", "就医用途", "核验", "上传二维码图片",
                                      "摄像头扫码"])}


def _csp(resp) -> dict[str, str]:
    directives = (d.strip().split(None, 1) for d in resp.headers["Content-Security-Policy"].split(";"))
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives if d}


@pytest.mark.parametrize("path", PAGES)
def test_page_is_served_in_chinese(client, path):
    script, labels = PAGES[path]
    resp = client.get(path)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert '<html lang="zh-CN">' in html and 'name="viewport"' in html
    for label in labels:
        assert label in html
    # The shared message table loads before the page's own script.
    assert html.index("/static/web/messages.js") < html.index(f"/static/web/{script}")


@pytest.mark.parametrize("path", PAGES)
def test_page_sends_a_strict_csp_and_no_referrer(client, path):
    resp = client.get(path)
    csp = _csp(resp)
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'"
    assert set(csp["img-src"].split()) == {"'self'", "data:", "blob:"}
    assert csp["frame-ancestors"] == "'none'"
    assert not any("unsafe" in v for v in csp.values())
    assert resp.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", PAGES)
def test_page_has_no_inline_code_and_no_external_resource(client, path):
    html = client.get(path).get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\sstyle=", html) and "<style" not in html, "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/static/web/") or url == "data:,", url


def test_only_the_scanner_may_use_the_camera(client):
    assert "camera=(self)" in client.get("/scanner/").headers["Permissions-Policy"]
    assert "camera=()" in client.get("/m/").headers["Permissions-Policy"]


@pytest.mark.parametrize("path", ["/m", "/scanner"])
def test_bare_path_redirects_to_the_trailing_slash(client, path):
    resp = client.get(path)
    assert resp.status_code in (301, 308)
    assert resp.headers["Location"].endswith(path + "/")


@pytest.mark.parametrize("name,mimetype", [("holder.js", "text/javascript"), ("scanner.js", "text/javascript"),
                                           ("messages.js", "text/javascript"), ("style.css", "text/css")])
def test_static_files_are_served(client, name, mimetype):
    resp = client.get(f"/static/web/{name}")
    assert resp.status_code == 200 and resp.mimetype == mimetype
    assert resp.get_data() == (STATIC / name).read_bytes()
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["holder.js", "scanner.js", "messages.js"])
def test_scripts_neither_log_nor_inject_html(name):
    # Tokens must never reach the console, and server data is only ever set as text.
    source = (STATIC / name).read_text(encoding="utf-8")
    assert not re.search(r"console\s*\.\s*\w+\s*\(", source)
    assert "innerHTML" not in source and "outerHTML" not in source and "insertAdjacentHTML" not in source
    assert "document.write" not in source and "eval(" not in source


def test_holder_page_never_puts_the_qr_token_text_anywhere():
    source = (STATIC / "holder.js").read_text(encoding="utf-8")
    # The QR response's `token` member is never read: only the rendered SVG is used.
    assert not re.search(r"\.token\b|\[\s*[\"']token[\"']\s*\]", source)
    # The access token leaves the address bar at once.
    assert "history.replaceState" in source
