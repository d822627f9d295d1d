"""Procfile, formation.toml and env parsing (README, docs/ctl.md). No I/O."""
from __future__ import annotations

import pytest

from common.appdef import AppDefError, Release, parse_env_file, parse_procfile, parse_settings


def test_procfile_with_comments_and_blank_lines():
    text = "# the app\n\nweb: python3 web.py --port $PORT\nworker:  python3 worker.py  \n"
    assert parse_procfile(text) == {"web": "python3 web.py --port $PORT",
                                    "worker": "python3 worker.py"}


@pytest.mark.parametrize("text, where", [
    ("web python3 web.py\n", "Procfile:1: expected 'type: command'"),
    ("web: a\nWeb: b\n", "Procfile:2: invalid process type name 'Web'"),
    ("web: a\nweb: b\n", "Procfile:2: process type 'web' is defined twice"),
    ("# nothing\n\nworker:\n", "Procfile:3: process type 'worker' has no command"),
    ("# only comments\n", "Procfile: defines no process type"),
    ("we_b: x\n", "Procfile:1: invalid process type name 'we_b'"),
])
def test_bad_procfile_lines_name_the_line(text, where):
    with pytest.raises(AppDefError, match="^" + where.replace("(", r"\(")):
        parse_procfile(text)


def test_settings_apply_per_type_with_defaults():
    types = parse_settings(
        '[web]\nstop_timeout = 3\n[web.health]\ntype = "http"\npath = "/healthz"\n',
        {"web": "a", "worker": "b"})
    assert types["web"].stop_timeout == 3 and types["web"].health.type == "http"
    assert types["web"].health.path == "/healthz" and types["web"].health.failures == 3
    assert types["worker"].stop_timeout == 10 and types["worker"].health.type == ""


@pytest.mark.parametrize("text, message", [
    ("[web]\nstop_timout = 3\n", "unknown key(s) stop_timout"),
    ("[web.health]\ntype = \"http\"\nbogus = 1\n", "unknown key(s) bogus"),
    ("[nosuch]\nstop_timeout = 1\n", "not in the Procfile: nosuch"),
    ("[web]\nstop_timeout = -1\n", "stop_timeout must be a number >= 0"),
    ("[web]\nat_most_once = \"yes\"\n", "at_most_once must be true or false"),
    ("[web.health]\ntype = \"udp\"\n", "type must be one of tcp, http, exec"),
    ("[web.health]\ntype = \"exec\"\n", "command is required"),
    ("[web\n", "formation.toml:"),
])
def test_bad_settings_are_errors_that_name_the_key(text, message):
    with pytest.raises(AppDefError) as e:
        parse_settings(text, {"web": "a"})
    assert message in str(e.value)


def test_env_file():
    text = "# c\nA=1\nexport B='two words'\nC=\"x=y\"\n\n"
    assert parse_env_file(text, ".env") == {"A": "1", "B": "two words", "C": "x=y"}
    with pytest.raises(AppDefError, match=r"\.env:1"):
        parse_env_file("1A=2\n", ".env")


def test_release_json_round_trip():
    types = parse_settings('[web.health]\ntype = "tcp"\n', {"web": "a"})
    r = Release(3, types, {"K": "V"}, 123.5)
    assert Release.from_json(r.to_json()) == r
