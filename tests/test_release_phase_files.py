"""The release phase in the files and on the wire (docs/releases.md): the Procfile's `release:`
entry kept apart from the process types, formation.toml's `[release] timeout`, and the same
rules for the API (common/appdef.py, common/appdef_pb.py) and for `ctl deploy`'s reading."""
from __future__ import annotations

import math

import pytest

from common.appdef import AppDefError, ProcessType, check_release, check_type
from common.appdef_pb import release_from_pb
from common.appfiles import parse_procfile, parse_release_timeout, parse_settings
from common.limits import MAX_COMMAND_BYTES
from ctl.deploy import load_files
from proto import formation_pb2 as pb

WEB = {"web": ProcessType("web", "python3 web.py")}


def one_line(e: pytest.ExceptionInfo[AppDefError]) -> str:
    message = str(e.value)
    assert "\n" not in message and len(message) < 300, message
    return message


# ---- the Procfile -----------------------------------------------------------------------------

def test_a_release_entry_is_kept_apart_from_the_process_types():
    procfile = parse_procfile("web: python3 web.py\nrelease: ./manage.py migrate\n"
                              "worker: python3 worker.py\n")
    assert procfile.commands == {"web": "python3 web.py", "worker": "python3 worker.py"}
    assert procfile.release == "./manage.py migrate"
    assert procfile.warnings == ()


def test_a_procfile_without_a_release_entry_has_none():
    assert parse_procfile("web: python3 web.py\n").release == ""


def test_a_procfile_with_only_a_release_entry_is_refused():
    with pytest.raises(AppDefError) as e:
        parse_procfile("release: ./migrate\n")
    assert one_line(e) == "Procfile: defines no process type (a release phase alone runs " \
                          "nothing)"


def test_release_spelled_with_uppercase_is_the_release_phase_too():
    procfile = parse_procfile("web: a\nRelease: ./migrate\n")
    assert procfile.release == "./migrate" and procfile.commands == {"web": "a"}
    assert procfile.renamed == {}  # not a process type: ctl never says "Release is now ..."
    assert procfile.warnings == ("Procfile:2: 'Release' is the release phase",)


# ---- formation.toml: [release] --------------------------------------------------------------

def test_the_release_timeout_defaults_to_600():
    assert parse_release_timeout("", "./migrate") == 600.0
    assert parse_release_timeout('[web]\nstop_timeout = 3\n', "./migrate") == 600.0
    assert parse_release_timeout("[release]\n", "./migrate") == 600.0


def test_the_release_timeout_is_read_as_seconds():
    assert parse_release_timeout("[release]\ntimeout = 30\n", "./migrate") == 30.0
    assert parse_release_timeout("[release]\ntimeout = 86400\n", "./migrate") == 86400.0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e9", '"x"', "true"])
def test_a_bad_release_timeout_is_refused_at_its_line(value):
    with pytest.raises(AppDefError) as e:
        parse_release_timeout(f"# the release phase\n[release]\ntimeout = {value}\n",
                              "./migrate")
    assert one_line(e).startswith("formation.toml:3: [release]: timeout must be a number of "
                                  "seconds from 1 to 86400, not ")


def test_an_unknown_key_in_release_is_refused_at_its_line():
    with pytest.raises(AppDefError) as e:
        parse_release_timeout("[release]\ntimeout = 30\ntimout = 30\n", "./migrate")
    assert one_line(e) == "formation.toml:3: [release]: unknown key(s) timout"


def test_a_release_table_without_a_release_entry_is_refused():
    with pytest.raises(AppDefError) as e:
        parse_release_timeout("[release]\ntimeout = 30\n", "", "app/formation.toml")
    assert one_line(e) == "app/formation.toml:1: [release]: settings for the release phase, " \
                          "but the Procfile has no 'release:' entry"


def test_a_release_table_spelled_with_uppercase_is_read_as_release():
    with pytest.raises(AppDefError):
        parse_release_timeout("[Release]\ntimeout = 0\n", "./migrate")
    assert parse_release_timeout("[Release]\ntimeout = 5\n", "./migrate") == 5.0


def test_parse_settings_ignores_the_release_table():
    types = parse_settings("[release]\ntimeout = 30\n[web]\nstop_timeout = 3\n",
                           {"web": "python3 web.py"})
    assert set(types) == {"web"} and types["web"].stop_timeout == 3


# ---- the same rules for every client ---------------------------------------------------------

def test_no_process_type_may_be_named_release():
    with pytest.raises(AppDefError) as e:
        check_type(ProcessType("release", "./migrate"))
    assert "'release' is the release phase, not a process type" in one_line(e)


@pytest.mark.parametrize("command, message", [
    ("./migrate\x00now", "release: command contains a NUL byte"),
    ("   ", "release: the command is blank"),
    ("x" * (MAX_COMMAND_BYTES + 1),
     f"release: command is {MAX_COMMAND_BYTES + 1} bytes, more than {MAX_COMMAND_BYTES}"),
], ids=["nul", "blank", "too-long"])
def test_check_release_refuses_a_bad_release_command(command, message):
    with pytest.raises(AppDefError) as e:
        check_release(WEB, {}, command)
    assert one_line(e) == message


def test_check_release_takes_a_release_command_and_its_timeout():
    check_release(WEB, {}, "./migrate", 30.0)
    check_release(WEB, {}, "x" * MAX_COMMAND_BYTES)
    check_release(WEB, {}, "")  # none


def request(timeout: float, command: str = "./migrate") -> pb.DeployRequest:
    return pb.DeployRequest(app="shop", types=[pb.ProcessType(name="web", command="a")],
                            release_command=command, release_timeout=timeout)


def test_release_from_pb_takes_a_zero_timeout_as_the_default():
    types, env, command, timeout = release_from_pb(request(0))
    assert (set(types), env, command, timeout) == ({"web"}, {}, "./migrate", 600.0)
    assert release_from_pb(request(45.5))[3] == 45.5


@pytest.mark.parametrize("timeout", [math.nan, -1.0, -math.inf, math.inf, 86401.0])
def test_release_from_pb_refuses_a_bad_timeout(timeout):
    with pytest.raises(AppDefError) as e:
        release_from_pb(request(timeout))
    assert one_line(e).startswith("release: timeout must be a number of seconds from 1 to "
                                  "86400")


def test_release_from_pb_refuses_a_type_named_release():
    req = request(0)
    req.types.append(pb.ProcessType(name="release", command="./migrate"))
    with pytest.raises(AppDefError, match="is the release phase"):
        release_from_pb(req)


# ---- ctl deploy's reading ---------------------------------------------------------------------

def test_ctl_reads_the_release_phase_from_the_procfile_and_formation_toml_beside_it(tmp_path):
    (tmp_path / "Procfile").write_text("web: python3 web.py\nrelease: ./migrate\n")
    (tmp_path / "formation.toml").write_text("[release]\ntimeout = 30\n[web]\n"
                                             "stop_timeout = 3\n")
    files = load_files(str(tmp_path / "Procfile"), None)
    assert (files.release_command, files.release_timeout) == ("./migrate", 30.0)
    assert set(files.types) == {"web"} and files.types["web"].stop_timeout == 3


def test_ctl_without_a_release_entry_has_no_release_phase(tmp_path):
    (tmp_path / "Procfile").write_text("web: python3 web.py\n")
    files = load_files(str(tmp_path / "Procfile"), None)
    assert (files.release_command, files.release_timeout) == ("", 600.0)


def test_ctl_refuses_a_bad_release_timeout_naming_the_file_and_line(tmp_path):
    (tmp_path / "Procfile").write_text("web: python3 web.py\nrelease: ./migrate\n")
    (tmp_path / "formation.toml").write_text("[release]\ntimeout = 0\n")
    with pytest.raises(AppDefError) as e:
        load_files(str(tmp_path / "Procfile"), None)
    assert one_line(e).startswith(f"{tmp_path / 'formation.toml'}:2: [release]: timeout ")
