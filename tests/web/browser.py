"""The holder and scanner pages as their users drive them in Chromium (Playwright), and a watch on
everything a page says that its user would not want: uncaught errors, console output, server
errors, secrets in the page."""
from __future__ import annotations

import io
import json
import re
import subprocess
import time
from urllib.parse import quote

import zxingcpp
from PIL import Image

# The one console line the browser itself writes for an answer of 4xx: expected on a refusal.
REFUSED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of 4\d\d\b")
PROBLEM_PATHS = re.compile(r"^/v1/|^/scanner/decode$")


def expect(target):
    """Playwright's `expect`, imported when first used: without Playwright installed the browser
    tests are collected all the same, and the `chromium` fixture says what is missing."""
    from playwright.sync_api import expect as playwright_expect
    return playwright_expect(target)


def qr_picture(text: str, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """What a webcam sees of a phone held up to it with the QR code of `text`: the code, as large
    as fits a little inside the frame, on white."""
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    side = memoryview(code.to_image(scale=1)).shape[0]
    view = memoryview(code.to_image(scale=max(1, int(min(size) * 0.8) // side)))
    image = Image.frombytes("L", (view.shape[1], view.shape[0]), view.tobytes())
    picture = Image.new("L", size, 255)
    picture.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    return picture


def write_y4m(path, picture: Image.Image, frames: int = 3) -> None:
    """Write `picture` as a YUV4MPEG2 video (4:2:0) of `frames` frames, which Chromium's fake
    camera (--use-file-for-fake-video-capture) plays over and over."""
    width, height = picture.size
    luma, cb, cr = picture.convert("YCbCr").split()
    chroma = (width // 2, height // 2)
    frame = b"FRAME\n" + luma.tobytes() + cb.resize(chroma).tobytes() + cr.resize(chroma).tobytes()
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        fh.write(frame * frames)


def read_qr(png: bytes) -> str:
    """The text of the one QR code in a screenshot, read by zxing-cpp as a desk scanner would."""
    found = zxingcpp.read_barcode(Image.open(io.BytesIO(png)), formats=zxingcpp.BarcodeFormat.QRCode)
    assert found is not None and found.text, "no QR code in the screenshot"
    return found.text


class Watch:
    """Collects a page's uncaught errors, console messages and failed answers; `check` asserts
    that none went wrong, `assert_never_shown` that a secret appears nowhere a person could see it."""

    def __init__(self, page):
        self.page = page
        self.errors: list[str] = []
        self.console: list[tuple[str, str]] = []
        self.calls: list[str] = []  # "METHOD /path" of every request the page made
        self.refused: list[tuple[int, str, str]] = []  # (status, path, content type) of answers >= 400
        self.allowed = [REFUSED_LOAD]
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.console.append((msg.type, msg.text)))
        page.on("request", lambda request: self.calls.append(f"{request.method} {_path(request.url)}"))
        page.on("response", self._answer)

    def _answer(self, response) -> None:
        if response.status >= 400:
            self.refused.append((response.status, _path(response.url), response.headers.get("content-type", "")))

    def allow(self, pattern: str) -> None:
        """Expect console lines matching `pattern` too (the browser's note of a failure the test causes)."""
        self.allowed.append(re.compile(pattern))

    def check(self) -> None:
        assert self.errors == [], f"uncaught errors in the page: {self.errors}"
        # The scripts log nothing; the browser notes each refused API call, and nothing else.
        # ("verbose" lines are Chromium's markup hints, which change from one version to the next.)
        noise = [(kind, text) for kind, text in self.console
                 if kind != "verbose" and not any(p.search(text) for p in self.allowed)]
        assert noise == [], f"console output: {noise}"
        for status, path, ctype in self.refused:
            assert status < 500, f"{path} answered {status}"
            assert PROBLEM_PATHS.match(path) and ctype.startswith("application/problem+json"), \
                f"{path} answered {status} ({ctype}): only API refusals are expected"

    def assert_never_shown(self, secret: str) -> None:
        page = self.page
        assert secret not in page.url, "in the address bar"
        assert secret not in page.content(), "in the markup"  # attributes and the QR image's data URL too
        assert secret not in page.evaluate("document.body.innerText"), "in the text"
        values = page.evaluate("Array.from(document.querySelectorAll('input, textarea'), e => e.value)")
        assert not any(secret in v for v in values), "in a field"
        assert not any(secret in text for _, text in self.console), "on the console"


def _path(url: str) -> str:
    return re.sub(r"^[a-z]+://[^/]+", "", url).split("?")[0]


# axe-core's rules for WCAG 2.0, 2.1 and 2.2 at levels A and AA, and its best practices
# (landmarks, heading order, …), which the pages follow as well.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa", "best-practice"]


def axe_violations(page) -> list[dict]:
    """Run axe-core (the copy axe-playwright-python bundles) on the page as it is now; its violations.

    The package's own `Axe.run` injects axe-core with `page.evaluate`: a CDP `Runtime.evaluate`,
    which the page's CSP (script-src 'self') does not govern, so the served CSP stays as it is
    and no context needs `bypass_csp`. But it evaluates in the page's main world, where the
    tests that hold the page's time have Playwright's clock in place of `setTimeout`, and
    `axe.run` waits on `setTimeout(…, 0)` that a held clock never fires. So axe-core is
    evaluated here in an isolated world of its own (same document, its own globals, the browser's
    own timers), which also keeps it out of the page scripts' sight."""
    from axe_playwright_python.base import AXE_SCRIPT
    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    cdp = page.context.new_cdp_session(page)
    try:
        frame = cdp.send("Page.getFrameTree")["frameTree"]["frame"]["id"]
        world = cdp.send("Page.createIsolatedWorld", {"frameId": frame, "worldName": "axe"})["executionContextId"]
        loaded = cdp.send("Runtime.evaluate", {"expression": AXE_SCRIPT, "contextId": world})
        assert "exceptionDetails" not in loaded, loaded["exceptionDetails"]
        out = cdp.send("Runtime.evaluate", {"expression": f"axe.run(document, {json.dumps(options)})",
                                            "contextId": world, "awaitPromise": True, "returnByValue": True})
    finally:
        cdp.detach()
    assert "exceptionDetails" not in out, out["exceptionDetails"]
    return out["result"]["value"]["violations"]


def assert_accessible(page, state: str) -> None:
    """Assert that axe-core finds no violation in the page as it is now (`state` names it in the
    failure): each violation's rule id, impact and help, and the elements it found."""
    violations = axe_violations(page)
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"]:
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"    {' '.join(map(str, node['target']))}: {summary}")
    assert not violations, f"axe-core: {len(violations)} violation(s) in {state}:\n" + "\n".join(lines)


_LAYOUT_PROBLEMS = """selectors => {
    const out = [];
    const root = document.documentElement;
    const width = root.clientWidth;
    if (root.scrollWidth > width) out.push(`the page scrolls sideways: ${root.scrollWidth} px wide in ${width}`);
    for (const selector of selectors) {
        const found = Array.from(document.querySelectorAll(selector));
        if (!found.length) out.push(`${selector}: not in the page`);
        for (const el of found) {
            el.scrollIntoView({block: "center", inline: "center"});
            const which = found.length > 1 ? `${selector} #${found.indexOf(el) + 1}` : selector;
            const box = el.getBoundingClientRect();
            if (!box.width || !box.height) { out.push(`${which}: not shown`); continue; }
            if (box.left < 0 || box.right > width + 0.5) {
                out.push(`${which}: from ${box.left} to ${box.right} px, outside the ${width} px of the screen`);
            }
            // An inline element has no box of its own to cut its text off.
            if (getComputedStyle(el).display !== "inline" &&
                (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)) {
                out.push(`${which}: its text does not fit (${el.scrollWidth}x${el.scrollHeight} px in ${el.clientWidth}x${el.clientHeight})`);
            }
            // The middle of the element (of its first line, where an inline element wraps) is its own.
            const line = el.getClientRects()[0];
            const hit = document.elementFromPoint(line.left + line.width / 2, line.top + line.height / 2);
            if (!hit || !el.contains(hit)) {
                const other = hit ? `<${hit.localName} id="${hit.id}" class="${hit.className}">` : "nothing";
                out.push(`${which}: covered by ${other}`);
            }
        }
    }
    window.scrollTo(0, 0);
    return out;
}"""


def assert_fits(page, selectors: list[str], state: str) -> None:
    """Assert that a person can see and press what `selectors` pick (each must match at least
    once) as the page is now: the page does not scroll sideways, and each element is shown,
    within the screen's width, with its text inside it, and not covered by another element."""
    problems = page.evaluate(_LAYOUT_PROBLEMS, selectors)
    assert not problems, f"{state}:\n" + "\n".join(problems)


def font_size(page, selector: str) -> float:
    """The computed font size in CSS pixels of the first element `selector` picks."""
    return page.locator(selector).first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")


def problem_code(response) -> str:
    """The problem `code` a page was answered with."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.status
    return response.json()["code"]


def is_call(path: str, method: str = "POST"):
    """A predicate for `page.expect_response`: an answer to `method path` on the service."""
    def matches(response) -> bool:
        return response.request.method == method and response.url.split("?")[0].endswith(path)
    return matches


class BrowserPage:
    """A page and its Watch; `base` is the service's URL when the browser context has none."""

    def __init__(self, page, watch: Watch, base: str = ""):
        self.page, self.watch, self.base = page, watch, base

    def hide(self) -> None:
        """Minimise the window, as a phone's screen goes dark or a desk PC's browser is put away:
        the page is hidden (document.visibilityState, `visibilitychange`). Only in an
        OwnChromium: where Playwright launched the browser, a page stays visible."""
        self._window("minimized", "hidden")

    def show(self) -> None:
        """Restore the window: the page is visible again."""
        self._window("normal", "visible")

    def visibility(self) -> str:
        return self.page.evaluate("document.visibilityState")

    def _window(self, state: str, visibility: str) -> None:
        cdp = self.page.context.new_cdp_session(self.page)
        try:
            window = cdp.send("Browser.getWindowForTarget")["windowId"]
            cdp.send("Browser.setWindowBounds", {"windowId": window, "bounds": {"windowState": state}})
        finally:
            cdp.detach()
        # Polled from here: a hidden page runs no animation frames for Playwright to wait on.
        deadline = time.monotonic() + 5
        while self.visibility() != visibility:
            assert time.monotonic() < deadline, f"the page did not become {visibility}"
            time.sleep(0.05)


class HolderPage(BrowserPage):
    """/m/ on the insured person's phone."""

    def open(self, access_token: str) -> "HolderPage":
        """Open the page as a channel app hands it over: the session in the URL fragment. Returns
        once the first code is shown (or the page has said why there is none)."""
        with self.page.expect_response(is_call("/v1/me", "GET")):
            self.page.goto(self.base + "/m/#access_token=" + quote(access_token, safe=""))
        return self

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def wait_for_code(self) -> None:
        self.page.locator("#qr-img:not(.qr-stale)").wait_for(state="visible")

    def code(self) -> str:
        """The token the shown QR code carries, read back from a screenshot of it."""
        self.wait_for_code()
        return read_qr(self.page.locator("#qr-img").screenshot())

    def next_code(self, action) -> tuple[str, object]:
        """Run `action`, which makes the page ask for a new code; (the code it then shows, the answer)."""
        before = self.page.locator("#qr-img").get_attribute("src")
        with self.page.expect_response(is_call("/v1/me/qr-tokens")) as answer:
            action()
        if answer.value.ok:
            expect(self.page.locator("#qr-img")).not_to_have_attribute("src", before or "")
        return (self.code() if answer.value.ok else None), answer.value

    def refresh(self):
        """Tap 刷新; the answer to the code request it makes."""
        with self.page.expect_response(is_call("/v1/me/qr-tokens")) as answer:
            self.page.locator("#qr-refresh").click()
        return answer.value


class ScannerPage(BrowserPage):
    """/scanner/ at a hospital or pharmacy desk."""

    def open(self) -> "ScannerPage":
        self.page.goto(self.base + "/scanner/")
        self.page.locator("#sign-in").wait_for(state="visible")
        return self

    def sign_in(self, client_id: str, secret: str):
        """Fill the sign-in form and submit it; the answer of the token endpoint."""
        self.page.locator("#client-id").fill(client_id)
        self.page.locator("#client-secret").fill(secret)
        with self.page.expect_response(is_call("/v1/oauth/token")) as answer:
            self.page.get_by_role("button", name="登录", exact=True).click()
        return answer.value

    def open_signed_in(self, inst: dict) -> "ScannerPage":
        self.open()
        assert self.sign_in(inst["client_id"], inst["client_secret"]).status == 200
        self.page.locator("#desk").wait_for(state="visible")
        return self

    def choose(self, purpose_label: str) -> None:
        self.page.locator("#purposes").get_by_text(purpose_label, exact=True).click()

    def type_code(self, text: str):
        """Type a code as a keyboard-wedge scanner does (key by key, then Enter); the scan's answer."""
        box = self.page.locator("#token-text")
        box.press_sequentially(text)
        with self.page.expect_response(is_call("/v1/scans")) as answer:
            box.press("Enter")
        return answer.value

    def upload(self, image: bytes, name: str = "photo.png", mime: str = "image/png"):
        """Choose a photo of a code; the answer of the photo decoder."""
        with self.page.expect_response(is_call("/scanner/decode")) as answer:
            self.page.locator("#photo-input").set_input_files(
                files=[{"name": name, "mimeType": mime, "buffer": image}])
        return answer.value

    def result_shown(self) -> str:
        card = self.page.locator("#result")
        card.wait_for(state="visible")
        return card.inner_text()


class OwnChromium:
    """Debian's Chromium launched by the test and driven by Playwright over CDP, without the
    defaults Playwright gives the browsers it launches itself. One of those, focus emulation
    (`Emulation.setFocusEmulationEnabled`, on every page it opens), keeps a page visible whatever
    becomes of its window or tab: there document.visibilityState never leaves "visible".
    Connected with `no_defaults`, the pages of the browser's default context are left as
    Chromium makes them, and a minimised window hides its page (headless Chromium 156).
    `with OwnChromium(playwright, executable, directory, args) as own:` opens `own.page`."""

    def __init__(self, playwright, executable: str, directory, args: list[str]):
        self.playwright, self.executable, self.directory, self.args = playwright, executable, directory, args

    def __enter__(self) -> "OwnChromium":
        self.directory.mkdir(parents=True, exist_ok=True)
        profile = self.directory / "profile"
        self._log = open(self.directory / "chromium.log", "wb")
        # No sandbox, as Playwright launches it: the tests may run as root.
        self._process = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--password-store=basic", "--use-mock-keychain", *self.args, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.browser = self.playwright.chromium.connect_over_cdp(self._endpoint(profile), no_defaults=True)
            context = self.browser.contexts[0]
            self.page = context.pages[0] if context.pages else context.new_page()
        except BaseException:
            self._stop()
            raise
        return self

    def _endpoint(self, profile) -> str:
        """The DevTools address Chromium writes into its profile once it listens."""
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while True:
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            assert self._process.poll() is None, f"Chromium exited; see {self.directory / 'chromium.log'}"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        try:
            self.browser.close()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
