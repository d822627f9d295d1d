"""The restart policy (docs/architecture.md): at once, then 0.5 s doubling to 30 s, reset after 60 s."""
from agent.lifecycle import RestartPolicy, describe_exit


def test_backoff_sequence_and_cap():
    p = RestartPolicy()
    delays = []
    now = 0.0
    for _ in range(10):
        p.started(now)
        now += 1
        delays.append(p.exited(now))
    assert delays == [0, 0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_reset_after_a_minute_up():
    p = RestartPolicy()
    p.started(0)
    p.exited(1)
    p.started(1)
    assert p.exited(2) == 0.5
    p.started(2)
    assert p.exited(62) == 0  # it ran 60 s: starts over


def test_describe_exit():
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "killed by SIGKILL"
