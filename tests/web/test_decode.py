"""POST /scanner/decode: the QR code in an uploaded photo, for browsers without BarcodeDetector."""
from __future__ import annotations

import io
import os

import pytest
import zxingcpp
from PIL import Image, PngImagePlugin

from tests.helpers import problem_code
from tests.web.conftest import hospital_headers

MiB = 1024 * 1024


def qr_image(text: str = "EV1:TEST") -> Image.Image:
    view = memoryview(zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M").to_image(scale=4))
    return Image.frombytes("L", (view.shape[1], view.shape[0]), view.tobytes())


def encode(img: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def post(client, headers, data: bytes, filename: str = "code.png", field: str = "image"):
    return client.post("/scanner/decode", data={field: (io.BytesIO(data), filename)},
                       headers=headers, content_type="multipart/form-data")


def test_decodes_a_png(client, inst_headers):
    resp = post(client, inst_headers, encode(qr_image()))
    assert resp.status_code == 200 and resp.get_json() == {"text": "EV1:TEST"}


def test_decodes_a_jpeg_photo_with_the_code_off_centre(client, inst_headers):
    photo = Image.new("RGB", (1200, 900), (200, 190, 170))
    photo.paste(qr_image("EV1:PHOTO").convert("RGB").resize((348, 348)), (700, 420))
    resp = post(client, inst_headers, encode(photo, "JPEG", quality=85), "photo.jpg")
    assert resp.status_code == 200 and resp.get_json() == {"text": "EV1:PHOTO"}


def test_accepts_an_upload_larger_than_the_api_body_limit(client, inst_headers):
    # Real photos exceed the 16 KiB JSON body limit; this route takes up to 2 MiB.
    info = PngImagePlugin.PngInfo()
    info.add_text("padding", os.urandom(48 * 1024).hex())
    data = encode(qr_image(), pnginfo=info)
    assert 64 * 1024 < len(data) < 2 * MiB
    resp = post(client, inst_headers, data)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"text": "EV1:TEST"}


def test_blank_image_is_token_malformed(client, inst_headers):
    resp = post(client, inst_headers, encode(Image.new("L", (300, 300), 255)))
    assert resp.status_code == 400 and problem_code(resp) == "token_malformed"


@pytest.mark.parametrize("data,filename", [
    (b"this is not an image", "code.png"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "truncated.png"),
    (None, "code.gif"),  # a real image, but neither PNG nor JPEG
])
def test_bad_upload_is_invalid_request(client, inst_headers, data, filename):
    if data is None:
        data = encode(qr_image(), "GIF")
    resp = post(client, inst_headers, data, filename)
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


def test_missing_field_is_invalid_request(client, inst_headers):
    resp = post(client, inst_headers, encode(qr_image()), field="photo")
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


def test_decompression_bomb_is_refused(client, inst_headers):
    data = encode(Image.new("1", (6000, 6000), 1))  # tiny file, 36 megapixels
    assert len(data) < 2 * MiB
    resp = post(client, inst_headers, data)
    assert resp.status_code == 400 and problem_code(resp) == "invalid_request"


@pytest.mark.parametrize("size", [2 * MiB + 1, 3 * MiB])
def test_over_two_mib_is_payload_too_large(client, inst_headers, size):
    resp = post(client, inst_headers, os.urandom(size))
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"


def test_a_form_field_too_large_for_memory_is_named_as_such(client, inst_headers):
    """A text field over the form's in-memory limit (Flask's 500 kB) is refused within the route's
    2 MiB body limit: the answer must not blame a body limit the request kept."""
    resp = client.post("/scanner/decode", data={"note": "x" * 600_000, "image": (io.BytesIO(encode(qr_image())), "c.png")},
                       headers=inst_headers, content_type="multipart/form-data")
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"
    assert "KiB" not in resp.get_json()["detail"] and "form" in resp.get_json()["detail"]


def test_each_institution_has_an_allowance_of_images_per_minute(make_app, clock):
    """A desk without BarcodeDetector sends its camera's frames here twice a second; frames
    without a code count too, and one institution's desks cannot use up another's allowance."""
    app = make_app(decode_rate_per_minute=3)
    client = app.test_client()
    clock.advance(60 - clock.now() % 60)  # the start of a one-minute window
    desk, other = hospital_headers(app, client, "H110000099"), hospital_headers(app, client, "H110000098")
    frame = encode(Image.new("L", (800, 600), 235), "JPEG")
    assert [problem_code(post(client, desk, frame)) for _ in range(3)] == ["token_malformed"] * 3
    resp = post(client, desk, encode(qr_image()))
    assert resp.status_code == 429 and problem_code(resp) == "rate_limited"
    assert resp.headers["Retry-After"] == "60"
    assert post(client, other, encode(qr_image())).get_json() == {"text": "EV1:TEST"}
    clock.advance(60)
    assert post(client, desk, encode(qr_image())).get_json() == {"text": "EV1:TEST"}


def test_requires_an_institution_token(client):
    resp = post(client, {}, encode(qr_image()))
    assert resp.status_code == 401 and problem_code(resp) == "unauthorized"


def test_other_routes_keep_the_16_kib_limit(client, inst_headers):
    resp = client.post("/v1/scans", data=b"x" * (17 * 1024), headers=inst_headers,
                       content_type="application/json")
    assert resp.status_code == 413 and problem_code(resp) == "payload_too_large"


def test_an_image_is_neither_kept_nor_logged(app, client, inst_headers, caplog):
    """A desk's photo or camera frame (a webcam sees the patient too) is decoded in memory and
    dropped: no file appears in the instance folder, and no log record, before any scrubbing,
    carries the code's text or the upload's name."""
    instance = app.extensions["evoucher"].config.instance_path

    def files() -> set[str]:
        return {os.path.join(d, f) for d, _, names in os.walk(instance) for f in names
                if not f.startswith("evoucher.db")}  # the database and its WAL change with every request
    before = files()
    text = "EV1:NEVER-LOGGED-" + os.urandom(6).hex().upper()
    with caplog.at_level("DEBUG"):
        resp = post(client, inst_headers, encode(qr_image(text)), "patient-desk-frame.png")
    assert resp.status_code == 200 and resp.get_json() == {"text": text}
    assert files() == before
    assert caplog.records  # the request was logged, without either
    for record in caplog.records:
        raw = repr(vars(record))
        assert text not in raw and "patient-desk-frame" not in raw
