"""python -m mock_channels: argument parsing and one JSON object per command."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mock_channels.__main__ import build_parser, main
from mock_channels.client import flask_sender

ID = "11010519491231002X"
ROOT = Path(__file__).resolve().parents[2]


def run(argv, service=None):
    out, err = io.StringIO(), io.StringIO()
    send = flask_sender(service.test_client()) if service else None
    code = main(argv, send=send, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_json(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


@pytest.mark.parametrize("channel_id", ["wechat", "alipay", "bank-icbc"])
def test_activate_then_session(service, instance_dir, channel_id):
    common = [channel_id, "--base-url", "http://evoucher.test", "--instance", str(instance_dir)]
    code, out, err = run(common + ["activate", "--id-number", ID, "--name", "张三", "--phone", "13800000000",
                                   "--pin", "258036"], service)
    assert (code, err) == (0, "")
    activated = one_json(out)
    assert activated["voucher_id"] and activated["channel_user_id"]
    assert service.calls[-1][2]["pin"] == "258036"
    code, out, _ = run(common + ["session", "--channel-user-id", activated["channel_user_id"]], service)
    assert code == 0
    assert one_json(out)["access_token"] == f"tok.{activated['channel_user_id']}"


def test_reverify_and_unbind(service, instance_dir):
    common = ["bank-icbc", "--base-url", "http://evoucher.test", "--instance", str(instance_dir)]
    code, out, _ = run(common + ["reverify", "--channel-user-id", "icbc_1", "--purpose", "reinstate",
                                 "--set", "link_id=L9", "--set", "count=2"], service)
    assert code == 0
    echo = one_json(out)["echo"]
    assert (echo["purpose"], echo["face_verified"], echo["link_id"], echo["count"]) == ("reinstate", True, "L9", 2)
    code, out, _ = run(common + ["unbind", "--channel-user-id", "icbc_1"], service)
    assert (code, one_json(out)["call"]) == (0, "unbindings")


def test_face_fail_flag_sends_a_failed_face_check(service, instance_dir):
    code, out, err = run(["wechat", "--base-url", "http://x", "--instance", str(instance_dir), "activate",
                          "--id-number", ID, "--name", "张三", "--phone", "13800000000", "--face-fail"], service)
    assert (code, out) == (1, "")
    problem = one_json(err)
    assert problem["code"] == "face_verification_required"
    assert service.calls[-1][2]["face_verified"] is False


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_reverify_face_check_fails_by_flag_or_environment(service, instance_dir, monkeypatch, how):
    # docs/channels.md: the stand-in face check fails with --face-fail or MOCK_FACE_FAIL=1.
    argv = ["bank-icbc", "--base-url", "http://x", "--instance", str(instance_dir), "reverify",
            "--channel-user-id", "icbc_1", "--purpose", "pin_reset"]
    if how == "flag":
        argv.append("--face-fail")
    else:
        monkeypatch.setenv("MOCK_FACE_FAIL", "1")
    run(argv, service)
    assert service.calls[-1][2]["face_verified"] is False


def test_refusal_prints_problem_to_stderr(service, instance_dir):
    code, out, err = run(["alipay", "--base-url", "http://x", "--instance", str(instance_dir), "session",
                          "--channel-user-id", "2088unknown"], service)
    assert (code, out) == (1, "")
    assert one_json(err)["code"] == "channel_not_bound"


def test_bad_id_number_is_refused_by_the_channel_itself(service, instance_dir):
    code, out, err = run(["wechat", "--base-url", "http://x", "--instance", str(instance_dir), "activate",
                          "--id-number", "110105194912310021", "--name", "张三", "--phone", "13800000000"], service)
    assert (code, out) == (1, "")
    assert one_json(err) == {"code": "invalid_id_number", "detail": "ID number failed the real-name check",
                             "source": "channel"}
    assert service.calls == []


def test_unknown_channel(instance_dir):
    code, out, err = run(["unionpay", "--instance", str(instance_dir), "session", "--channel-user-id", "u"])
    assert (code, out) == (1, "")
    assert one_json(err)["code"] == "channel_unknown"


def test_keys_command(tmp_path):
    code, out, _ = run(["bank-cmb", "--instance", str(tmp_path), "--app-id", "cmb-001", "keys"])
    info = one_json(out)
    assert code == 0
    assert info["app_id"] == "cmb-001" and len(info["serial"]) == 16
    assert Path(info["public_key"]).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


@pytest.mark.parametrize("argv", [
    ["wechat"],
    ["wechat", "activate", "--name", "张三", "--phone", "1"],
    ["wechat", "reverify", "--channel-user-id", "u", "--purpose", "other"],
    ["wechat", "reverify", "--channel-user-id", "u", "--purpose", "pin_reset", "--set", "novalue"],
    ["wechat", "session"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_parser_defaults():
    args = build_parser().parse_args(["bank-icbc", "web"])
    assert (args.command, args.host, args.port, args.base_url) == ("web", "127.0.0.1", None, None)


def test_module_entry_point_runs(tmp_path):
    # The real `python -m mock_channels` process, against a closed loopback port.
    result = subprocess.run([sys.executable, "-m", "mock_channels", "wechat", "--instance", str(tmp_path),
                             "--base-url", "http://127.0.0.1:9", "session", "--channel-user-id", "wx_1"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert json.loads(result.stderr)["code"] == "service_unreachable"
