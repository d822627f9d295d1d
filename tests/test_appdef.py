"""Procfile, formation.toml and env parsing (README, docs/ctl.md). No I/O.

The Procfile is read as Heroku's CNB parser (github.com/heroku/buildpacks-procfile) reads it:
a key that is not strictly `[a-z0-9]([a-z0-9-]*[a-z0-9])?` is corrected (`_` -> `-`,
lowercase, leading spaces dropped) with a warning, a duplicate keeps the last definition."""
from __future__ import annotations

import pytest

from common.appdef import AppDefError, Release
from common.appfiles import normalise_type_name, parse_env_file, parse_procfile, parse_settings
from common.limits import MAX_COMMAND_BYTES, MAX_TYPES_PER_RELEASE


def test_procfile_with_comments_and_blank_lines():
    text = "# the app\n\nweb: python3 web.py --port $PORT\nworker:  python3 worker.py  \n"
    parsed = parse_procfile(text)
    assert parsed.commands == {"web": "python3 web.py --port $PORT",
                               "worker": "python3 worker.py"}
    assert parsed.warnings == () and parsed.renamed == {}


# Realistic Procfiles, as found in public repositories, and what they define.
REAL_PROCFILES = [
    ("rails", "web: bundle exec puma -C config/puma.rb\n"
              "worker: bundle exec sidekiq -C config/sidekiq.yml\n"
              "release: bundle exec rails db:migrate\n",
     {"web": "bundle exec puma -C config/puma.rb",
      "worker": "bundle exec sidekiq -C config/sidekiq.yml",
      "release": "bundle exec rails db:migrate"}),
    ("rails, CRLF and a BOM", "\ufeffweb: bundle exec rails server -p $PORT -e $RAILS_ENV\r\n"
                              "worker: bundle exec rake jobs:work\r\n",
     {"web": "bundle exec rails server -p $PORT -e $RAILS_ENV",
      "worker": "bundle exec rake jobs:work"}),
    ("node, no space after the colon", "web:node index.js\nclock:node clock.js\n",
     {"web": "node index.js", "clock": "node clock.js"}),
    ("node, npm scripts and comments",
     "# Heroku runs this\n# web: node old.js\nweb: npm start   # the server\n\n\n",
     {"web": "npm start   # the server"}),
    ("python django", "release: python manage.py migrate --noinput\n"
                      "web: gunicorn myproject.wsgi --log-file -\n"
                      "worker: celery -A myproject worker -l info\n"
                      "beat: celery -A myproject beat -l info\n",
     {"release": "python manage.py migrate --noinput",
      "web": "gunicorn myproject.wsgi --log-file -",
      "worker": "celery -A myproject worker -l info",
      "beat": "celery -A myproject beat -l info"}),
    ("python, tabs and indentation", "\tweb:\tgunicorn app:app --bind 0.0.0.0:$PORT\n"
                                     "  worker:  python -u worker.py\t\n",
     {"web": "gunicorn app:app --bind 0.0.0.0:$PORT", "worker": "python -u worker.py"}),
    ("no final newline", "web: java -Dserver.port=$PORT -jar target/app.jar",
     {"web": "java -Dserver.port=$PORT -jar target/app.jar"}),
    ("go, one type", "web: bin/server", {"web": "bin/server"}),
    ("php", "web: vendor/bin/heroku-php-apache2 public/\n",
     {"web": "vendor/bin/heroku-php-apache2 public/"}),
    ("elixir, colons in the command", "web: MIX_ENV=prod mix phx.server\n"
                                      "release: mix ecto.migrate && echo done: ok\n",
     {"web": "MIX_ENV=prod mix phx.server", "release": "mix ecto.migrate && echo done: ok"}),
    ("numbers and dashes in names", "web: ./run web\nworker-2: ./run w2\n9to5: ./run cron\n",
     {"web": "./run web", "worker-2": "./run w2", "9to5": "./run cron"}),
    ("a shell pipeline", "web: bin/start-nginx bundle exec unicorn -c config/unicorn.rb\n"
                         "logs: tail -F log/*.log | grep -v health\n",
     {"web": "bin/start-nginx bundle exec unicorn -c config/unicorn.rb",
      "logs": "tail -F log/*.log | grep -v health"}),
]


@pytest.mark.parametrize("text, commands", [(t, c) for _, t, c in REAL_PROCFILES],
                         ids=[name for name, _, _ in REAL_PROCFILES])
def test_realistic_procfiles(text, commands):
    parsed = parse_procfile(text)
    commands = dict(commands)
    release = commands.pop("release", "")  # the release phase, kept apart
    assert parsed.commands == commands and parsed.warnings == ()
    assert parsed.release == release


# What Heroku's CNB parser corrects, with a warning: (text, commands, renamed, warnings).
CORRECTED = [
    ("critical_job: ./job\n", {"critical-job": "./job"}, {"critical_job": "critical-job"},
     ["Procfile:1: process type 'critical_job' is named 'critical-job'"]),
    ("Web: a\nWORKER_Low: b\n", {"web": "a", "worker-low": "b"},
     {"Web": "web", "WORKER_Low": "worker-low"},
     ["Procfile:1: process type 'Web' is named 'web'",
      "Procfile:2: process type 'WORKER_Low' is named 'worker-low'"]),
    ("web: a\n# c\nweb: b\n", {"web": "b"}, {},
     ["Procfile:3: process type 'web' is defined again (line 1); this last definition is used"]),
    ("web: a\nWeb: b\n", {"web": "b"}, {"Web": "web"},
     ["Procfile:2: process type 'Web' is named 'web'",
      "Procfile:2: process type 'web' is defined again (line 1); this last definition is used"]),
    ("   web: echo foo: bar\n", {"web": "echo foo: bar"}, {}, []),  # indentation: no warning
]


@pytest.mark.parametrize("text, commands, renamed, warnings", CORRECTED)
def test_heroku_corrections_warn_one_line_each(text, commands, renamed, warnings):
    parsed = parse_procfile(text)
    assert parsed.commands == commands
    assert parsed.renamed == renamed
    assert list(parsed.warnings) == warnings
    assert all("\n" not in w for w in parsed.warnings)


def test_normalise_type_name_is_ascii_only():
    assert normalise_type_name(" Critical_Job\t") == "critical-job"
    assert normalise_type_name("\u212aelvin") == "\u212aelvin"  # KELVIN SIGN: not a 'k'


@pytest.mark.parametrize("text, where", [
    ("web python3 web.py\n", "Procfile:1: expected 'type: command'"),
    ("# nothing\n\nworker:\n", "Procfile:3: process type 'worker' has no command"),
    ("# only comments\n", "Procfile: defines no process type"),
    ("", "Procfile: defines no process type"),
    (": rails s\n", "Procfile:1: invalid process type name ''"),
    ("is_w.e.b: echo hello\n", "Procfile:1: invalid process type name 'is_w.e.b'"),
    ("-web: x\n", "Procfile:1: invalid process type name '-web'"),
    ("w\u00e9b: x\n", "Procfile:1: invalid process type name 'w\u00e9b'"),
    ("\u212aelvin: x\n", "Procfile:1: invalid process type name '\u212aelvin'"),
    ("a" * 64 + ": x\n", "Procfile:1: invalid process type name 'aaaa"),
    ("web: a\n\ufeffworker: b\n", "Procfile:2: invalid process type name '\\ufeffworker'"),
    ("web: sleep 100\x00000\n", "Procfile:1: the command of 'web' contains the control "
                                "character U+0000"),
    ("web: a\rworker: b\n", "Procfile:1: the command of 'web' contains the control character "
                            "U+000D"),
    ("web: " + "x" * (MAX_COMMAND_BYTES + 1) + "\n",
     f"Procfile:1: the command of 'web' is {MAX_COMMAND_BYTES + 1} bytes, more than "
     f"{MAX_COMMAND_BYTES}"),
    ("".join(f"t{i}: x\n" for i in range(MAX_TYPES_PER_RELEASE + 1)),
     f"Procfile: defines {MAX_TYPES_PER_RELEASE + 1} process types, more than"),
])
def test_bad_procfile_lines_name_the_line(text, where):
    with pytest.raises(AppDefError) as e:
        parse_procfile(text)
    assert str(e.value).startswith(where), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_settings_apply_per_type_with_defaults():
    types = parse_settings(
        '[web]\nstop_timeout = 3\n[web.health]\ntype = "http"\npath = "/healthz"\n',
        {"web": "a", "worker": "b"})
    assert types["web"].stop_timeout == 3 and types["web"].health.type == "http"
    assert types["web"].health.path == "/healthz" and types["web"].health.failures == 3
    assert types["worker"].stop_timeout == 10 and types["worker"].health.type == ""


def test_settings_tables_may_use_the_procfiles_spelling():
    procfile = parse_procfile("web: a\ncritical_job: b\n")
    warnings: list[str] = []
    types = parse_settings("\ufeff[critical_job]\nstop_timeout = 30\n", procfile.commands,
                           warnings=warnings)
    assert types["critical-job"].stop_timeout == 30
    assert warnings == ["formation.toml:1: [critical_job]: applies to process type "
                        "'critical-job'"]
    with pytest.raises(AppDefError, match="settings twice"):
        parse_settings("[critical_job]\n[critical-job]\n", procfile.commands)


@pytest.mark.parametrize("text, message", [
    ("[web]\nstop_timout = 3\n", "formation.toml:2: [web]: unknown key(s) stop_timout"),
    ("[web.health]\ntype = \"http\"\nbogus = 1\n",
     "formation.toml:3: [web.health]: unknown key(s) bogus"),
    ("[nosuch]\nstop_timeout = 1\n", "not in the Procfile: nosuch"),
    ("[web]\nstop_timeout = -1\n", "formation.toml:2: [web]: stop_timeout must be a number of "
                                   "seconds from 0 to 3600, not -1"),
    ("[web]\nstop_timeout = nan\n", "stop_timeout must be a number of seconds from 0 to 3600"),
    ("[web]\nstop_timeout = inf\n", "stop_timeout must be a number"),
    ("[web]\nstop_timeout = 3601\n", "stop_timeout must be a number"),
    ("[web]\nstop_timeout = true\n", "stop_timeout must be a number"),
    ("[web]\nat_most_once = \"yes\"\n", "at_most_once must be true or false"),
    ("[web.health]\ntype = \"udp\"\n", "formation.toml:2: [web.health]: type must be one of "
                                       "tcp, http, exec"),
    ("[web.health]\ntype = \"exec\"\n", "command is required"),
    ("[web.health]\ntype = \"exec\"\ncommand = \"  \"\n", "command is required"),
    ("[web.health]\ntype = \"tcp\"\ncommand = \"true\"\n", "command is required"),
    ("[web.health]\ntype = \"exec\"\ncommand = \"a\\u0000b\"\n",
     "formation.toml:3: [web.health]: command contains a NUL byte"),
    ("[web.health]\ntype = \"http\"\npath = \"/a\\r\\nX: y\"\n",
     "formation.toml:3: [web.health]: path must start with '/' and be printable ASCII"),
    ("[web.health]\ntype = \"http\"\npath = \"/a b\"\n", "path must start with '/'"),
    ("[web.health]\ntype = \"http\"\npath = \"/é\"\n", "path must start with '/'"),
    ("[web.health]\ntype = \"http\"\npath = \"healthz\"\n", "path must start with '/'"),
    ("[web.health]\ntype = \"http\"\npath = \"/" + "a" * 1024 + "\"\n",
     "path must start with '/'"),
    ("[web.health]\nfailures = 3000000000\n", "formation.toml:2: [web.health]: failures must "
                                              "be a whole number from 1 to 1000, not 3000000000"),
    ("[web.health]\nfailures = 0\n", "failures must be a whole number from 1 to 1000"),
    ("[web.health]\nfailures = 2.5\n", "failures must be a whole number"),
    ("[web.health]\ninterval = 0\n", "formation.toml:2: [web.health]: interval must be a "
                                     "number of seconds from 0.1 to 3600, not 0"),
    ("[web.health]\ninterval = 1e300\n", "interval must be a number of seconds"),
    ("[web.health]\ntimeout = -inf\n", "timeout must be a number of seconds from 0.1 to 3600"),
    ("[web.health]\ngrace = nan\n", "grace must be a number of seconds from 0 to 3600"),
    ("[web]\nhealth = 3\n", "formation.toml:2: [web.health]: must be a table"),
    ("[web\n", "formation.toml:"),
])
def test_bad_settings_are_errors_that_name_the_key(text, message):
    with pytest.raises(AppDefError) as e:
        parse_settings(text, {"web": "a"})
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_settings_at_the_bounds_are_accepted():
    types = parse_settings('[web]\nstop_timeout = 3600\n[web.health]\ntype = "http"\n'
                           'path = "/' + "a" * 1023 + '"\ninterval = 0.1\ntimeout = 3600\n'
                           'grace = 0\nfailures = 1000\n', {"web": "a"})
    assert types["web"].health.failures == 1000 and len(types["web"].health.path) == 1024


def test_env_file():
    text = "\ufeff# c\r\nA=1\r\nexport B='two words'\nC=\"x=y\"\n\n"
    assert parse_env_file(text, ".env") == {"A": "1", "B": "two words", "C": "x=y"}
    with pytest.raises(AppDefError, match=r"\.env:1"):
        parse_env_file("1A=2\n", ".env")
    with pytest.raises(AppDefError, match=r"^\.env:2: variable B contains a NUL byte$"):
        parse_env_file("A=1\nB=x\x00y\n", ".env")
    with pytest.raises(AppDefError, match=r"^\.env:1: expected KEY=VALUE"):
        parse_env_file("\u00c9T\u00c9=1\n", ".env")


def test_release_json_round_trip():
    types = parse_settings('[web.health]\ntype = "tcp"\n', {"web": "a"})
    r = Release(3, types, {"K": "V"}, 123.5)
    assert Release.from_json(r.to_json()) == r
