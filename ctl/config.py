"""`ctl config [--json]`, `ctl config set K=V [K=V...]`, `ctl config unset K [K...]`: the
app's config vars (the env of its releases). A change makes a new release ("Set FOO, BAR")
with the current one's code and settings, made current like a deploy; vars persist across
deploys (a deploy's --env sets vars on top). Values are secrets: operators only."""
from __future__ import annotations

import argparse

from common.appdef import AppDefError
from common.appfiles import parse_env_line
from common.escape import escape
from ctl import waitrelease
from ctl.author import author
from ctl.client import Client
from ctl.errors import USAGE, CtlError
from ctl.output import emit_json


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[parent], help="show or change config vars",
                       description=__doc__.split("\n\n")[0])
    p.set_defaults(run=show)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    s = actions.add_parser("set", parents=[parent], help="set config vars (a new release)")
    s.add_argument("pairs", nargs="+", metavar="K=V")
    waitrelease.add_flags(s)
    s.set_defaults(run=change)
    u = actions.add_parser("unset", parents=[parent], help="unset config vars (a new release)")
    u.add_argument("names", nargs="+", metavar="K")
    waitrelease.add_flags(u)
    u.set_defaults(run=change)


def show(args: argparse.Namespace, client: Client) -> int:
    reply = client.config(args.app)
    if args.json:
        emit_json(dict(sorted(reply.config.items())))
    elif not reply.release:
        print(f"{args.app} has no release yet: run 'ctl deploy PROCFILE'.")
    else:
        for key, value in sorted(reply.config.items()):
            print(f"{key}={escape(value)}")
    return 0


def change(args: argparse.Namespace, client: Client) -> int:
    to_set: dict[str, str] = {}
    try:
        for pair in getattr(args, "pairs", []):
            key, value = parse_env_line(pair, "config set")
            to_set[key] = value
    except AppDefError as e:
        raise CtlError(str(e), USAGE) from None
    names = list(getattr(args, "names", []))
    reply = client.set_config(args.app, to_set, names, author())
    if reply.changed and args.wait:
        waitrelease.wait(client, args, reply.version)
    if args.json:
        emit_json({"app": args.app, "release": reply.version, "changed": reply.changed})
    elif reply.changed:
        print(f"{args.app} release v{reply.version}: "
              + ", ".join([f"set {k}" for k in sorted(to_set)]
                          + [f"unset {k}" for k in sorted(names)]))
    else:
        print(f"No change: v{reply.version} has these config vars already")
    return 0
