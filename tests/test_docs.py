"""The operator's documentation and the code agree: settings, commands, options and metrics.

docs/operations.md is what an operator configures and runs the service from; these checks fail
when a setting, a command, an option or a metric is added, renamed or removed on one side only.
"""
from __future__ import annotations

import math
import re
import runpy
from pathlib import Path

import click
import pytest

from app import _instance_path, database_url
from app.cli import main
from app.config import Config

ROOT = Path(__file__).resolve().parents[1]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
# os.environ or the env dict Config.from_env reads (not a WSGI request's environ).
ENV_READ = re.compile(r'(?<![\w.])(?:os\.environ\.get\(|env\.get\(|_int\(env,)\s*"([A-Z][A-Z0-9_]+)"')
SERVICE_SOURCES = [ROOT / "gunicorn.conf.py", ROOT / "wsgi.py", *sorted((ROOT / "app").rglob("*.py")),
                   *sorted((ROOT / "crypto").rglob("*.py"))]


def _env_names(paths) -> set[str]:
    return {name for path in paths for name in ENV_READ.findall(path.read_text(encoding="utf-8"))}


def _settings_table() -> dict[str, str | None]:
    """Setting name -> documented default (the backticked value, or None when it is words)."""
    section = OPERATIONS.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])
        defaults = cells[1].split(", ")
        literal = all(re.fullmatch(r"`[^`]+`", d) for d in defaults) and len(defaults) == len(names)
        for i, name in enumerate(names):
            table[name] = defaults[i].strip("`") if literal else None
    return table


def test_every_setting_the_service_reads_is_in_the_settings_table():
    assert _env_names(SERVICE_SOURCES) - set(_settings_table()) == set()


def test_every_setting_in_the_table_is_read_by_the_service_or_the_mock_channels():
    read = _env_names(SERVICE_SOURCES + sorted((ROOT / "mock_channels").rglob("*.py")))
    assert set(_settings_table()) - read == set()


def test_the_mock_channels_settings_are_documented():
    documented = DOCS["operations.md"] + DOCS["channels.md"]
    for name in _env_names(sorted((ROOT / "mock_channels").rglob("*.py"))):
        assert f"`{name}" in documented, name


# The settings Config reads whose documented default is a value ("unset" or "—" is none).
CONFIG_DEFAULTS = {name: _settings_table().get(name) for name in _env_names([ROOT / "app" / "config.py"])}


def test_settings_without_a_default_are_the_ones_without_one():
    assert sorted(name for name, default in CONFIG_DEFAULTS.items() if default is None) == [
        "EVOUCHER_MASTER_KEY", "REDIS_URL"]
    assert Config.from_env({}).master_key is None and Config.from_env({}).redis_url is None


@pytest.mark.parametrize("name", sorted(name for name, default in CONFIG_DEFAULTS.items() if default))
def test_documented_default_is_the_default(name, monkeypatch):
    """Setting a variable to its documented default changes nothing."""
    default = CONFIG_DEFAULTS[name]
    monkeypatch.delenv("EVOUCHER_INSTANCE", raising=False)
    plain = Config.from_env({})
    # Two defaults are resolved when the app is built, not in Config.
    if name == "DATABASE_URL":
        assert default.replace("<instance>", _instance_path(plain)) == database_url(plain)
        return
    given = Config.from_env({name: default})
    if name == "EVOUCHER_INSTANCE":
        assert _instance_path(given) == _instance_path(plain)
    else:
        assert given == plain


def _settings_rows() -> dict[str, str]:
    """Setting name -> the text of its row in the settings table."""
    section = OPERATIONS.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {name: line for line in section.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}


INT_SETTINGS = re.findall(r'_int\(env, "([A-Z][A-Z0-9_]+)", (\d+), ([\d* ]+), ([\d* ]+)\)',
                          (ROOT / "app" / "config.py").read_text(encoding="utf-8"))


def _product(expression: str) -> int:
    """An integer literal or a product of them, as config.py writes bounds (4 * 1024 * 1024)."""
    return math.prod(int(factor) for factor in expression.split("*"))


def test_every_bounded_setting_states_its_bounds():
    """A value outside the bounds stops every command and the service: the table says them."""
    assert len(INT_SETTINGS) >= 9
    rows = _settings_rows()
    for name, _default, lo, hi in INT_SETTINGS:
        bounds = f"{_product(lo)}–{_product(hi)}"
        assert bounds in rows[name].replace(",", ""), f"{name}: the settings table does not say {bounds}"


def test_documented_gunicorn_defaults(monkeypatch, tmp_path):
    table = _settings_table()
    for name in ("EVOUCHER_BIND", "WEB_CONCURRENCY", "EVOUCHER_THREADS", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    # The settings file makes a metrics directory unless one is set; keep that out of os.environ.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert conf["bind"] == table["EVOUCHER_BIND"]
    assert conf["workers"] == int(table["WEB_CONCURRENCY"])
    assert conf["threads"] == int(table["EVOUCHER_THREADS"])
    assert conf["loglevel"] == table["LOG_LEVEL"].lower()


def _commands(group: click.Group, prefix: str = "evoucher"):
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            yield from _commands(command, path)
        else:
            yield path, command


COMMANDS = dict(_commands(main))


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_and_option_is_in_operations_md(path):
    assert path in OPERATIONS
    for param in COMMANDS[path].params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt in OPERATIONS, f"{path} {opt}"


def _resolve(words: list[str]) -> str | None:
    command, path = main, "evoucher"
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command, path = command.commands[word], f"{path} {word}"
    return path if path in COMMANDS else None


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_command_the_docs_name_exists_with_its_options(doc):
    """`evoucher a b [--opt …]` in code spans and blocks names a real command and its options."""
    text = DOCS[doc]
    spans = re.findall(r"```[a-z]*\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text)
    for span in spans:
        for line in span.splitlines():
            for match in re.finditer(r"(?<![\w/.-])(?:\S*/)?evoucher((?: [a-z][a-z-]*)+)(.*?)(?=&&|$)", line):
                path = _resolve(match.group(1).split())
                assert path, f"{doc}: {match.group(0)!r} names no command"
                options = {o for p in COMMANDS[path].params for o in p.opts}
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(2)):
                    assert opt in options, f"{doc}: {path} has no option {opt}"


def _metric_names() -> set[str]:
    source = (ROOT / "app" / "metrics.py").read_text(encoding="utf-8")
    return set(re.findall(r'(?:Counter|Histogram|Gauge|Summary)\(\s*"(evoucher_[a-z_]+)"', source))


def test_metrics_named_in_the_docs_exist_and_all_are_listed():
    metrics = _metric_names()
    assert len(metrics) >= 6
    for doc, text in DOCS.items():
        for name in re.findall(r"\bevoucher_[a-z_]+", text):
            base = re.sub(r"_(bucket|count|sum|created)$", "", name)
            assert base in metrics, f"{doc} names {name}, which app/metrics.py does not define"
    for name in metrics:
        assert f"`{name}`" in OPERATIONS, f"{name} is not listed in docs/operations.md"


# "503 `service_unavailable`", "`pin_locked`, 423", "`name_mismatch` (422", "`401 unauthorized`".
STATUS_AND_CODE = re.compile(r"\b(?P<s1>[1-5]\d\d)\s+`(?P<c1>[a-z_]+)`|`(?P<c2>[a-z_]+)`,?\s+\(?(?P<s2>[1-5]\d\d)\b"
                             r"|`(?P<s3>[1-5]\d\d) (?P<c3>[a-z_]+)`")


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_an_http_status_the_docs_give_a_problem_code_is_its_status(doc):
    from app.errors import CODES
    for match in STATUS_AND_CODE.finditer(DOCS[doc]):
        status, code = next((match[f"s{i}"], match[f"c{i}"]) for i in (1, 2, 3) if match[f"c{i}"])
        assert code in CODES, f"{doc}: {match[0]!r} names no problem code"
        assert str(CODES[code][0]) == status, f"{doc}: {match[0]!r}, but app/errors.py answers {code} with {CODES[code][0]}"
