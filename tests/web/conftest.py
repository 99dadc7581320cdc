"""Web-page fixtures: the pages do not depend on the storage backend, so run them on SQLite only."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from types import SimpleNamespace

import pytest

from tests.conftest import build_app, build_config, need_service
from tests.web.browser import HolderPage, OwnChromium, ScannerPage, Watch, write_y4m
from tests.web.live import LiveServer, RunningClock


@pytest.fixture
def backend():
    return "sqlite-sqlstore"


def hospital_headers(app, client, code: str = "H110000099") -> dict:
    """Bearer headers for a freshly registered, active hospital with institution code `code`."""
    from app.services import institutions
    with app.app_context():
        session = app.extensions["evoucher"].session()
        inst, secret = institutions.add(session, code=code, name="测试医院", kind="hospital",
                                        region_code="110000")
        client_id = inst.client_id
        session.commit()
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    resp = client.post("/v1/oauth/token", data={"grant_type": "client_credentials"},
                       headers={"Authorization": f"Basic {basic}"})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": "Bearer " + resp.get_json()["access_token"]}


@pytest.fixture
def inst_headers(app, client):
    """Bearer headers for a freshly registered, active hospital."""
    return hospital_headers(app, client)


# --- browser tests: Chromium driven by Playwright against the service over HTTP ---------------

CHROMIUM = os.environ.get("EVOUCHER_TEST_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 360, "height": 640}  # the smallest screen the holder page is made for (SPEC §8)
DESK = {"width": 1024, "height": 768}


@pytest.fixture(scope="session")
def playwright_driver():
    """Playwright, with Debian's Chromium to drive. Either missing, it skips the browser tests
    with the reason; under CI=true it fails them (tests/conftest.need_service)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service("Playwright", "the playwright package is missing: pip install -e '.[test]'")
    if not os.access(CHROMIUM, os.X_OK):
        need_service("Chromium", f"no browser at {CHROMIUM}: apt-get install chromium, "
                                 "or point EVOUCHER_TEST_CHROMIUM at one")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def chromium(playwright_driver):
    """One headless Chromium for the session (Debian's, driven by Playwright)."""
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def live(request, tmp_path_factory):
    """The service over HTTP for the whole session, on SQLite with the demo data and a clock the
    tests move forward: (url, world, clock). Tests share it, so each uses persons of its own."""
    from tests.helpers import World
    clock = RunningClock()
    config = build_config(request, "sqlite-sqlstore", tmp_path_factory.mktemp("live"))
    app = build_app(config, "sqlite-sqlstore", clock)
    try:
        world = World(app, app.test_client(), tmp_path_factory.getbasetemp())
        with LiveServer(app) as server:
            yield SimpleNamespace(url=server.url, world=world, clock=clock)
    finally:
        app.extensions["evoucher"].engine.dispose()


@pytest.fixture
def new_page(chromium, playwright_driver, live, tmp_path):
    """Opens a page in a fresh browser context (storage of its own: another device) on `live`;
    when the test ends, asserts of every page opened that nothing went wrong in it (Watch.check).
    With `chromium_args`, the page is in a Chromium of its own launched with those flags; with
    `font_size`, in a Chromium whose profile sets that default font size (large_text_profile)."""
    opened, launched = [], []

    def new(viewport: dict, *, clock: bool = False, chromium_args: list[str] | None = None,
            font_size: int | None = None):
        options = dict(base_url=live.url, viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai")
        if font_size:
            profile = large_text_profile(tmp_path / f"profile-{len(opened)}", font_size)
            context = playwright_driver.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=chromium_args or [], **options)
        else:
            browser = chromium
            if chromium_args:
                browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
                launched.append(browser)
            context = browser.new_context(**options)
        context.set_default_timeout(5000)
        page = context.new_page()
        if clock:  # the page's timers then run only when the test moves its clock forward
            hold_clock(page)
        watch = Watch(page)
        opened.append((context, watch))
        return page, watch
    yield new
    for context, _watch in opened:
        context.close()
    for browser in launched:
        browser.close()
    for _context, watch in opened:
        watch.check()


def large_text_profile(directory, font_size: int) -> str:
    """A Chromium profile whose default font size is `font_size` px (Settings › Appearance › Font
    size; 16 is the default): the text size a person chose, which the pages' rem follow. A profile
    preference and not CDP's Page.setFontSizes, which Playwright undoes at its next emulation
    call (a screenshot, for one)."""
    (directory / "Default").mkdir(parents=True)
    prefs = {"webkit": {"webprefs": {"default_font_size": font_size,
                                     "default_fixed_font_size": font_size * 13 // 16}}}
    (directory / "Default" / "Preferences").write_text(json.dumps(prefs))
    return str(directory)


@pytest.fixture(scope="session")
def chinese_font():
    """A font with Chinese glyphs, without which Chinese text is drawn as narrower boxes and a
    test of what fits at large text proves nothing. Missing, it skips (fails under CI=true)."""
    try:
        found = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        found = ""
    if not found.strip():
        need_service("a Chinese font", "fc-list finds none: apt-get install fonts-wqy-microhei")


def hold_clock(page) -> None:
    """Install Playwright's clock in `page`, held still: its timers run when the test moves it."""
    now = time.time()
    page.clock.install(time=now)
    page.clock.pause_at(now + 1)


@pytest.fixture
def phone(new_page):
    """A new phone for the holder page: `phone()`, or `phone(clock=True)` with its clock held,
    `phone(font_size=32)` with its text at twice the default size."""
    return lambda **kw: HolderPage(*new_page(PHONE, **kw))


@pytest.fixture
def desk(new_page):
    """A new desk computer with the scanner page: `desk()`, or `desk(viewport, font_size=32)`."""
    return lambda viewport=DESK, **kw: ScannerPage(*new_page(viewport, **kw))


def fake_camera(picture, directory) -> list[str]:
    """Chromium flags for a webcam that films `picture` (a PIL image, even width and height):
    the fake capture device plays it from a Y4M file, the fake permission prompt allows it."""
    video = directory / f"camera-{time.monotonic_ns()}.y4m"
    write_y4m(video, picture)
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}"]


@pytest.fixture
def camera_desk(new_page, tmp_path):
    """A new desk computer whose webcam films `picture`: `camera_desk(picture)` (in a Chromium of
    its own, launched with the fake camera's flags)."""
    return lambda picture, **kw: ScannerPage(*new_page(DESK, chromium_args=fake_camera(picture, tmp_path), **kw))


@pytest.fixture
def own_page(playwright_driver, live, tmp_path):
    """Opens a page in a Chromium the test launches itself (browser.OwnChromium), where the page
    can be hidden and shown again for real (`hide()`, `show()` of the page objects); as new_page,
    it takes a viewport, `clock` and `chromium_args`, and Watch.check's the page when the test ends.
    Page objects opened there need `base=live.url`: the browser's own context has no base URL."""
    opened = []
    with contextlib.ExitStack() as stack:
        def new(viewport: dict, *, clock: bool = False, chromium_args: list[str] | None = None):
            own = stack.enter_context(OwnChromium(playwright_driver, CHROMIUM, tmp_path / f"chromium-{len(opened)}",
                                                  chromium_args or []))
            page = own.page
            page.set_viewport_size(viewport)
            page.set_default_timeout(5000)
            if clock:
                hold_clock(page)
            watch = Watch(page)
            opened.append(watch)
            return page, watch
        yield new
    for watch in opened:
        watch.check()


@pytest.fixture
def own_phone(own_page, live):
    """A new phone for the holder page in a Chromium of its own, its clock held, whose screen the
    test turns off and on (`hide()`, `show()`)."""
    return lambda: HolderPage(*own_page(PHONE, clock=True), base=live.url)


@pytest.fixture
def own_camera_desk(own_page, live, tmp_path):
    """A new desk computer whose webcam films `picture`, in a Chromium of its own, whose page the
    test hides and shows (`hide()`, `show()`)."""
    return lambda picture: ScannerPage(*own_page(DESK, chromium_args=fake_camera(picture, tmp_path)), base=live.url)
