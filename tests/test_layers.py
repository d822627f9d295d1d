"""The layers import one way: proto <- common <- {scheduler, agent, ctl, lb}; those four never
import each other, and no module imports itself back through others (no import circle, counting
imports made only for type checking)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proto", "common", "scheduler", "agent", "ctl", "lb")
MAY_IMPORT = {"proto": {"proto"}, "common": {"proto", "common"},
              "scheduler": {"proto", "common", "scheduler"},
              "agent": {"proto", "common", "agent"}, "ctl": {"proto", "common", "ctl"},
               "lb": {"proto", "common", "lb"}}


def modules() -> dict[str, set[str]]:
    """module name -> the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = f"{package}.{path.stem}"
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module in PACKAGES:  # from agent import metrics
                        found.update(f"{node.module}.{a.name}" for a in node.names)
                    else:
                        found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
            graph[name] = {m for m in found if m.split(".")[0] in PACKAGES and m != name}
    return graph


def test_packages_import_only_the_layers_below_them():
    wrong = [(m, i) for m, imports in modules().items() for i in imports
             if i.split(".")[0] not in MAY_IMPORT[m.split(".")[0]]]
    assert not wrong, wrong


def test_no_import_circle():
    graph = modules()
    circles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        if node in path:
            circles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node], done)
        done.add(node)

    finished: set[str] = set()
    for module in sorted(graph):
        visit(module, [], finished)
    assert not circles, circles


def test_no_file_is_a_giant():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for package in PACKAGES if package != "proto"
             for p in (ROOT / package).glob("*.py")}
    # About 300 lines: a long one-name-per-line import list may take a module a little over.
    assert {p: n for p, n in sizes.items() if n > 330} == {}


def test_the_daemons_do_not_load_cryptography():
    """`cryptography` costs a process about 12 MiB; the daemons read their TLS files with
    `ssl` (common/certinfo.py), and only ctl makes certificates."""
    for module in ("scheduler.main", "agent.main", "lb.main"):
        code = (f"import sys, {module}; "
                "sys.exit(any(m.split('.')[0] == 'cryptography' for m in sys.modules))")
        assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60
                              ).returncode == 0, f"{module} imports cryptography"
