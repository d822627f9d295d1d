"""docs/operations.md, run: every command block of the page, in order, on machines of the
multi-host harness (tests/cluster/machines.py: a network namespace and a root directory per
node, the root namespace as the admin machine), then checks of what the page promises.

The page's convention ("How this page is tested" there): a command block is tagged after its
language with the machine it runs on (`sh node1`, `sh each`, `sh admin`, …); `system` marks the
blocks that change the machine's own system (packages, users, owners), which are not run and
must hold nothing else. Every wait here is a poll with a deadline.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.haproxy import haproxy_binary
from tests.cluster import wait_for
from tests.cluster.machines import ADMIN, DOC_ADDRESSES, NODES, Machines
from tests.cluster.network import Network, namespaces_possible

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "operations.md"
SHELLS = ("sh", "bash", "shell", "console")
MACHINES = (ADMIN, *NODES, "each")
# What a `system` block may hold: each command's first word, and what else it must say.
SYSTEM = {"apt-get": r"apt-get install -y \S|apt-get (remove|purge)\b",
          "useradd": r"useradd --system\b", "chown": r"chown \S+ /",
          "python3": r"python3 -m venv /opt/formation$",
          "/opt/formation/bin/pip": r"/opt/formation/bin/pip install \S",
          "curl": r"curl -fsSLO https://github\.com/etcd-io/etcd/releases/download/\S+$",
          "sha256sum": r"sha256sum --check", "tar": r"tar -xzf etcd-\S+ -C /usr/local/bin ",
          "systemctl": r"systemctl .*"}
# Units the test runs itself: never in a `system` block.
EMULATED_UNITS = re.compile(r"\b(formation-[a-z]+|etcd)(\.service)?\b")
SHELL_WORDS = {"do", "then", "else", "!", "time", "{", "(", "done", "fi", "}", ")"}


@dataclass
class Block:
    line: int
    section: str
    machine: str
    system: bool
    text: str


def page_blocks(text: str) -> list[Block]:
    """The page's shell blocks, in order, with the `##` section each is in. Fails on a shell
    block whose tags are not the convention's."""
    out = []
    section = ""
    fence = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
    headings = [(m.start(), m.group(1)) for m in re.finditer(r"^## (.+)$", text, re.M)]
    for m in fence.finditer(text):
        info = m.group(1).split()
        if not info or info[0] not in SHELLS:
            continue
        section = next((title for at, title in reversed(headings) if at < m.start()), "")
        line = text.count("\n", 0, m.start()) + 1
        tags = info[1:]
        assert tags and tags[0] in MACHINES and tags[1:] in ([], ["system"]), \
            f"docs/operations.md:{line}: a shell block must say where it runs: " \
            f"```sh MACHINE [system]```, MACHINE one of {', '.join(MACHINES)}; not {m.group(1)!r}"
        out.append(Block(line, section, tags[0], tags[1:] == ["system"], m.group(2)))
    return out


def commands(script: str) -> list[str]:
    """The simple commands of a script, as words: continuation lines joined, comments and
    here-documents' bodies left out, split at ; && || | and the shell's own words."""
    out: list[str] = []
    lines = script.replace("\\\n", " ").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if heredoc:  # skip its body
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        line = re.sub(r"(^|\s)#.*$", "", line)
        for part in re.split(r";|&&|\|\||\|", line):
            words = part.split()
            while words and words[0] in SHELL_WORDS:
                words = words[1:]
            if words and not re.fullmatch(r"\w+\(\)", words[0]) and words[0] != "for" \
                    and words[0] != "until":
                out.append(" ".join(words))
    return out


def test_every_shell_block_says_where_it_runs_and_system_blocks_hold_only_system_changes():
    blocks = page_blocks(PAGE.read_text())
    assert sum(not b.system for b in blocks) >= 20, "the page's runnable blocks went missing"
    kinds: dict[str, list[str]] = {}
    for block in blocks:
        for command in commands(block.text):
            first = command.split()[0]
            where = f"docs/operations.md:{block.line} ({block.section})"
            if block.system:
                assert first in SYSTEM and re.match(SYSTEM[first], command), \
                    f"{where}: `{command}` is in a `system` block, which the test does not " \
                    "run, but it is not a change of the machine's system: move it to a block " \
                    "the test runs"
                assert first != "systemctl" or not EMULATED_UNITS.search(command), \
                    f"{where}: `{command}`: the test runs Formation's and etcd's units itself"
                kinds.setdefault(first, []).append(command)
            else:
                assert first not in ("apt-get", "apt", "useradd", "chown") and \
                    not re.match(r"\S*pip3? install|python3 -m venv", command), \
                    f"{where}: `{command}` changes the machine's system: tag the block `system`"
    print("not run (system):", json.dumps(kinds, indent=1))
    assert set(kinds) >= {"apt-get", "useradd", "chown", "/opt/formation/bin/pip"}


def test_the_prometheus_configuration_keeps_the_shipped_job_names():
    """The rules and the dashboard select on the job names of deploy/prometheus."""
    def jobs(text: str) -> set[str]:
        return set(re.findall(r"job_name:\s*(\S+)", text))
    shipped = jobs((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    page = PAGE.read_text()
    written = page[page.index("/etc/prometheus/prometheus.yml <<'EOF'"):]
    assert shipped <= jobs(written[:written.index("\nEOF\n")]), shipped


# ---- the whole page ------------------------------------------------------------------------

class Page:
    """The machines, and the page run on them block by block."""

    def __init__(self, machines: Machines) -> None:
        self.m = machines
        self.ran = 0

    def run(self, machine: str, text: str, where: str = "") -> str:
        done = self.m.run(machine, text)
        assert done.returncode == 0, (
            f"{where or text!r} on {machine} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}\n"
            f"--- units\n{self.logs()}")
        return done.stdout

    def block(self, block: Block) -> None:
        for machine in NODES if block.machine == "each" else (block.machine,):
            self.run(machine, block.text, f"docs/operations.md:{block.line} ({block.section})")
        self.ran += 1

    def json(self, machine: str, command: str) -> object:
        return json.loads(self.run(machine, command))

    def logs(self) -> str:
        out = []
        for (machine, unit), service in self.m.services.items():
            code = service.proc.poll()
            state = "running" if code is None else f"exited {code}"
            out.append(f"{unit} on {machine}: {state}\n{self.m.tail(service, 8)}")
        return "\n".join(out)

    def instances(self) -> dict[str, int]:
        rows = self.json(ADMIN, "ctl ps --json")
        assert isinstance(rows, list)
        return {r["id"]: r["pid"] for r in rows if r["state"] == "running"}

    def node_of(self, address: str) -> str:
        return self.m.aliases[address.rsplit(":", 1)[0]]


def test_the_page_start_to_finish():
    if not namespaces_possible():
        pytest.skip("needs network namespaces (root and `ip netns`): the page's machines "
                    "use fixed ports, one port space each")
    assert haproxy_binary() is not None, "haproxy is not installed: apt-get install haproxy"
    began = time.monotonic()
    blocks = page_blocks(PAGE.read_text())
    run_id = uuid.uuid4().hex[:12]
    network = Network(run_id, "netns")
    base = Path(tempfile.mkdtemp(prefix="fops-"))
    machines = Machines(base, run_id, network.create(list(NODES)))
    page = Page(machines)
    leaked: list[int] = []
    try:
        machines.prepare()
        machines.serve()
        upgrade = [b for b in blocks if b.section.startswith("Upgrade")]
        assert upgrade, "the page has no Upgrades section"
        before: dict[str, Any] = {}
        for block in blocks:
            if block.system:
                continue
            if block is next(b for b in upgrade if not b.system):
                before = snapshot(page)
            page.block(block)
        assert page.ran == sum(not b.system for b in blocks)
        check_etcd(page)
        check_schedulers(page)
        check_agents(page)
        check_app(page)
        check_lb(page)
        check_prometheus(page)
        check_upgrade(page, before)
        check_page_units(page)
        assert not [s for s in machines.services.values() if s.proc.poll() is not None], \
            f"units ended: {page.logs()}"
    finally:
        leaked = machines.close()
        network.destroy()
        left = network.leftovers()
        took = time.monotonic() - began
        print(f"docs/operations.md ran in {took:.1f}s")
        if not left and not leaked and os.environ.get("FTEST_KEEP_LOGS") is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"the machines' directories (logs in */var/log): {base}")
    assert not machines.ended, f"units that had ended by themselves: {machines.ended}"
    assert not leaked and not left, f"leaked processes {leaked}, namespaces {left}"


def check_etcd(page: Page) -> None:
    health = page.json("node1", "etcdctl endpoint health -w json")
    assert isinstance(health, list) and len(health) == 3 and all(h["health"] for h in health)
    members = page.json("node1", "etcdctl member list -w json")
    assert isinstance(members, dict)
    assert sorted(m["name"] for m in members["members"]) == list(NODES)
    for m in members["members"]:  # TLS between members and to clients
        assert all(u.startswith("https://") for u in m["peerURLs"] + m["clientURLs"]), m


def check_schedulers(page: Page) -> None:
    def three() -> list[dict]:
        rows = page.json(ADMIN, "ctl schedulers --json")
        assert isinstance(rows, list)
        ok = len(rows) == 3 and all(r["healthy"] for r in rows) and \
            [r["leader"] for r in rows] == [True, False, False]
        return rows if ok else []
    rows = wait_for(three, 20, interval=0.2, what="three healthy replicas, one leading")
    assert sorted(r["name"] for r in rows) == ["sched-1", "sched-2", "sched-3"]
    assert sorted(page.node_of(r["address"]) for r in rows) == list(NODES)


def check_agents(page: Page) -> None:
    def ready() -> list[dict]:
        rows = page.json(ADMIN, "ctl agents --json")
        assert isinstance(rows, list)
        return rows if sorted((r["name"], r["state"], r["connected"]) for r in rows) == \
            [(n, "ready", True) for n in NODES] else []
    rows = wait_for(ready, 20, interval=0.2, what="three ready agents")
    assert {r["address"] for r in rows} == {page.m.machines[n].address for n in NODES}


def check_app(page: Page) -> None:
    formation = page.json(ADMIN, "ctl formation --json")
    assert formation == {"web": {"desired": 3, "running": 3},
                         "worker": {"desired": 2, "running": 2}}, formation
    rows = page.json(ADMIN, "ctl ps --json")
    assert isinstance(rows, list) and {r["agent"] for r in rows} <= set(NODES), rows


def check_lb(page: Page) -> None:
    env = (page.m.machines["node1"].root / "etc" / "formation" / "lb.env").read_text()
    port = re.search(r"^FORMATION_LB_LISTEN=\S+:(\d+)$", env, re.M)
    assert port, env
    url = f"http://{page.m.machines['node1'].address}:{port.group(1)}/"

    def answers() -> set[str]:
        seen = set()
        for _ in range(9):
            with urllib.request.urlopen(url, timeout=5) as r:
                seen.add(r.read().decode().strip())
        return seen if len(seen) == 3 else set()
    seen = wait_for(answers, 15, interval=0.2, what="every web instance through formation-lb")
    assert seen == {f"Hello from web.{i}" for i in (1, 2, 3)}, seen


def check_prometheus(page: Page) -> None:
    config = (page.m.machines["node1"].root / "etc" / "prometheus" / "prometheus.yml").read_text()
    urls = re.findall(r"url:\s*(\S+)", config)
    targets = re.findall(r"\"([\d.]+:\d+)\"", config)
    assert len(urls) == 6 and len(targets) == 7, config
    for doc in DOC_ADDRESSES.values():
        assert doc not in config, "the test did not rewrite the page's addresses"
    found: dict[str, int] = {}
    for url in urls:  # every replica answers; the leader with the agents and instances
        with urllib.request.urlopen(url, timeout=5) as r:
            groups = json.loads(r.read())
        kind = url.rsplit("/", 1)[1]
        found[kind] = found.get(kind, 0) + sum(len(g["targets"]) for g in groups)
    assert found == {"agents": 3, "instances": 5}, found
    for target in targets:  # schedulers, formation-lb, etcd
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as r:
            assert r.status == 200 and b"# TYPE" in r.read()


def check_page_units(page: Page) -> None:
    """The units the page writes itself (etcd's, formation-lb's) pass `systemd-analyze verify`,
    as deploy/systemd's do in tests/test_systemd.py."""
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    assert os.access(analyze, os.X_OK), "systemd-analyze is missing: install `systemd`"
    shipped = {p.name for p in (ROOT / "deploy" / "systemd").glob("*.service")}
    units = [p for p in (page.m.machines["node1"].root / "etc/systemd/system").iterdir()
             if p.name not in shipped]
    assert sorted(p.name for p in units) == ["etcd.service", "formation-lb.service"], units
    done = subprocess.run([analyze, "verify", "--man=no", "--generators=no", *map(str, units)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_COLORS": "0"})
    said = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and said == "", said


def snapshot(page: Page) -> dict[str, Any]:
    """Before the upgrade: the instances' pids, who leads, the daemons' pids."""
    replicas = page.json(ADMIN, "ctl schedulers --json")
    assert isinstance(replicas, list) and replicas[0]["leader"], replicas
    return {"instances": page.instances(), "leader": page.node_of(replicas[0]["address"]),
            "agents": {n: page.m.main_pid(n, "formation-agent") for n in NODES},
            "schedulers": {n: page.m.main_pid(n, "formation-scheduler") for n in NODES}}


def started_at(pid: int) -> int:
    """When the process started, in clock ticks since boot (/proc/PID/stat's 22nd field)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def says(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def check_upgrade(page: Page, before: dict[str, Any]) -> None:
    m = page.m
    assert page.instances() == before["instances"], "an instance restarted during the upgrade"
    assert {n: m.main_pid(n, "formation-agent") for n in NODES} == before["agents"], \
        "an agent's process was replaced rather than reloaded"
    for n in NODES:  # the reload re-executed it (SIGHUP returns at once; the exec follows)
        log = m.machines[n].root / "var" / "log" / "formation-agent.log"
        wait_for(functools.partial(says, log, "upgraded in place: adopted"), 30,
                 what=f"{n}'s agent to upgrade in place")
    assert page.instances() == before["instances"], "an instance restarted during the upgrade"
    now = {n: m.main_pid(n, "formation-scheduler") for n in NODES}
    assert all(now[n] not in (None, before["schedulers"][n]) for n in NODES), \
        f"every scheduler restarts: {before['schedulers']} → {now}"
    started = {n: started_at(pid) for n, pid in now.items() if pid is not None}
    assert max(started, key=lambda n: started[n]) == before["leader"], \
        f"the leader ({before['leader']}) restarts last: {started}"
    check_schedulers(page)
