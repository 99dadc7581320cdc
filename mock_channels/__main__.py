"""python -m mock_channels CHANNEL {activate,session,reverify,unbind,keys,web} …

Each command prints exactly one JSON object on stdout; a refusal prints the problem JSON on
stderr and exits 1.
"""
from __future__ import annotations

import argparse
import json
import sys

from app.channels import channel_kind

from . import identity
from .client import ChannelClient, ChannelError, default_base_url
from .keys import default_instance_dir, ensure_keys

DEFAULT_PORTS = {"wechat": 8001, "alipay": 8002, "bank": 8003}


def _extra_value(text: str):
    """KEY=VALUE for --set: the value as JSON when it parses (true, 3, "x"), else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mock_channels",
                                     description="Mock channel partner (wechat, alipay, bank-<code>)")
    parser.add_argument("channel", help="wechat, alipay or bank-<code> (e.g. bank-icbc)")
    parser.add_argument("--base-url", default=None, help="service URL (default $EVOUCHER_URL or %s)"
                        % "http://127.0.0.1:8000")
    parser.add_argument("--instance", default=None, help="instance folder (default $EVOUCHER_INSTANCE or ./instance)")
    parser.add_argument("--app-id", default=None, help="the channel's app id / mchid (default: the channel id)")
    sub = parser.add_subparsers(dest="command", required=True)

    act = sub.add_parser("activate", help="real-name + face check, then activate the voucher")
    act.add_argument("--id-number", required=True)
    act.add_argument("--name", required=True)
    act.add_argument("--phone", required=True)
    act.add_argument("--pin", default=None, help="6-digit payment PIN to set at activation")
    act.add_argument("--channel-user-id", default=None, help="default: derived from channel and ID number")
    act.add_argument("--face-fail", action="store_true", help="make the face check fail")

    ses = sub.add_parser("session", help="open a holder session")
    ses.add_argument("--channel-user-id", required=True)

    rev = sub.add_parser("reverify", help="re-verify the person for pin_reset, reinstate or family_accept")
    rev.add_argument("--channel-user-id", required=True)
    rev.add_argument("--purpose", required=True, choices=["pin_reset", "reinstate", "family_accept"])
    rev.add_argument("--face-fail", action="store_true", help="make the face check fail")
    rev.add_argument("--set", dest="extra", action="append", type=_extra_value, default=[],
                     metavar="KEY=VALUE", help="extra body field (value parsed as JSON when it can be)")

    unb = sub.add_parser("unbind", help="unbind this channel")
    unb.add_argument("--channel-user-id", required=True)

    sub.add_parser("keys", help="print the channel's key files and serial (generated once)")

    web = sub.add_parser("web", help="serve the channel's activation page")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=None, help="default 8001 wechat, 8002 alipay, 8003 banks")
    web.add_argument("--public-url", default=None, help="service URL as the browser reaches it (default: --base-url)")
    return parser


def _run(args, send) -> dict:
    instance = args.instance or default_instance_dir()
    if args.command == "keys":
        private, public, serial = ensure_keys(instance, args.channel)
        return {"channel": args.channel, "app_id": args.app_id or args.channel, "serial": serial,
                "public_key": str(public), "private_key": str(private)}
    client = ChannelClient(args.channel, args.base_url, instance, send=send, app_id=args.app_id)
    if args.command == "activate":
        check = identity.real_name_check(args.id_number, args.name)
        if not check.ok:
            raise ChannelError(0, {"code": check.code, "detail": check.detail, "source": "channel"})
        face = identity.face_check(args.name, force_fail=args.face_fail)
        return client.activate(args.id_number, args.name, args.phone, pin=args.pin,
                               channel_user_id=args.channel_user_id, face_verified=face)
    if args.command == "session":
        return client.session(args.channel_user_id)
    if args.command == "reverify":
        # No name to go by here: the face check fails only by --face-fail or MOCK_FACE_FAIL=1.
        face = identity.face_check("", force_fail=args.face_fail)
        return client.reverify(args.channel_user_id, args.purpose, face_verified=face, **dict(args.extra))
    return client.unbind(args.channel_user_id)


def main(argv: list[str] | None = None, *, send=None, stdout=None, stderr=None) -> int:
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    kind = channel_kind(args.channel)
    if kind is None:
        print(json.dumps({"code": "channel_unknown", "detail": f"unknown channel {args.channel!r}: "
                          "use wechat, alipay or bank-<code>"}), file=stderr)
        return 1
    if args.command == "web":
        from .web import create_app

        app = create_app(args.channel, args.base_url or default_base_url(),
                         args.instance or default_instance_dir(), app_id=args.app_id,
                         public_url=args.public_url)
        app.run(host=args.host, port=args.port or DEFAULT_PORTS[kind])
        return 0
    try:
        result = _run(args, send)
    except ChannelError as exc:
        problem = dict(exc.problem)
        if exc.status:
            problem.setdefault("status", exc.status)
        print(json.dumps(problem, ensure_ascii=False), file=stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False), file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
