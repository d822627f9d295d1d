"""ctl's parsing of `TYPE=N` and names, before anything is sent. No I/O."""
from __future__ import annotations

import pytest

from common.names import MAX_INSTANCES_PER_TYPE, split_instance_id
from ctl.errors import USAGE, CtlError
from ctl.scale import check_timeout, parse_specs, resolve


def test_absolute_and_relative_counts():
    specs = parse_specs(["web=3", "worker+2", "clock-1", "my-type=+4", "a-b-2"])
    assert specs == {"web": ("=", 3), "worker": ("+", 2), "clock": ("-", 1),
                     "my-type": ("+", 4), "a-b": ("-", 2)}
    assert resolve(specs, {"worker": 1, "clock": 1, "my-type": 1, "a-b": 5}) == \
        {"web": 3, "worker": 3, "clock": 0, "my-type": 5, "a-b": 3}


@pytest.mark.parametrize("spec", ["web=-1", "web=abc", "web=1x", "Web=1", "web=100000",
                                  "web", "=3", "web=", "w_b=1", "web=1.5", "web= 1",
                                  "-web=1", "web=٣"])
def test_bad_specs_are_usage_errors(spec):
    with pytest.raises(CtlError) as e:
        parse_specs([spec])
    assert e.value.code == USAGE
    assert "\n" not in str(e.value)


def test_relative_below_zero_or_over_the_maximum_is_refused():
    with pytest.raises(CtlError):
        resolve(parse_specs(["web-3"]), {"web": 1})
    with pytest.raises(CtlError):
        resolve(parse_specs(["web+1"]), {"web": MAX_INSTANCES_PER_TYPE})


def test_instance_ids():
    assert split_instance_id("web.10") == ("web", 10)
    for bad in ("web", "web.0", "Web.1", "web.x", ".1"):
        with pytest.raises(ValueError):
            split_instance_id(bad)


def test_a_procfile_spelling_gets_the_name_it_became():
    with pytest.raises(CtlError) as e:
        parse_specs(["Critical_Job=2"])
    assert e.value.code == USAGE
    assert str(e.value) == ("invalid process type name 'Critical_Job': a Procfile's "
                            "'Critical_Job' is named 'critical-job'")


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), float("-inf"), -1.0, 0.0])
def test_a_wait_timeout_must_be_finite_and_positive(timeout):
    with pytest.raises(CtlError) as e:
        check_timeout(timeout)
    assert e.value.code == USAGE
    assert check_timeout(0.5) == 0.5 and check_timeout(1e6) == 1e6
