"""The guardian's sweep when its agent dies (agent/guardian.py), on plain directories standing
in for cgroups: a cgroup the agent made for an instance it was starting, but had not told of
yet, is killed and removed too; no process group is signalled for it."""
from __future__ import annotations

import os

from agent import guardian


def test_untold_cgroups_are_the_base_directories_the_agent_never_named(tmp_path):
    told, late = tmp_path / "web-1", tmp_path / "web-2"
    told.mkdir()
    late.mkdir()
    (tmp_path / "cgroup.procs").write_text("")  # a file of the base itself: not a cgroup
    assert guardian.untold(str(tmp_path), {100: str(told)}) == [str(late)]
    assert guardian.untold(str(tmp_path / "gone"), {}) == []


def test_a_cgroup_with_no_known_group_gets_cgroup_kill_and_no_signal(tmp_path, monkeypatch):
    signalled: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: signalled.append(pgid))
    late = tmp_path / "web-2"
    late.mkdir()
    guardian.kill({-1: str(late), 100: ""})
    assert signalled == [100]  # never killpg(0) or of a negative: the guardian's own group
    assert (late / "cgroup.kill").read_text() == "1"


def test_remove_kills_a_busy_cgroup_again_until_it_can_go(tmp_path, monkeypatch):
    busy = tmp_path / "web-3"
    busy.mkdir()
    tries: list[str] = []
    real = os.rmdir

    def rmdir(path):
        tries.append(path)
        if len(tries) < 3:  # a process entered it after the first kill
            raise OSError(16, "Device or resource busy")
        with open(os.path.join(path, "cgroup.kill")) as f:  # killed again meanwhile
            assert f.read() == "1"
        os.remove(os.path.join(path, "cgroup.kill"))
        real(path)
    monkeypatch.setattr(os, "rmdir", rmdir)
    guardian.remove([str(busy)])
    assert len(tries) == 3 and not busy.exists()
