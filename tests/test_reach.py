"""The guard against vacuous property tests (tests/reach.py) fails when it should."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from reach import NOT_REACHED, must_reach

FEW = settings(max_examples=20, deadline=None, database=None)


def test_a_test_whose_examples_all_stop_early_fails():
    @must_reach(10)
    @FEW
    @given(st.integers())
    def refuses_everything(x):
        return NOT_REACHED

    with pytest.raises(AssertionError, match="only 0 example"):
        refuses_everything()


def test_a_test_whose_examples_mostly_stop_early_fails():
    seen = []

    @must_reach(10)
    @FEW
    @given(st.integers(0, 10**9))
    def refuses_most(x):
        seen.append(x)
        if x % 1000 != 3:
            return NOT_REACHED
        assert x % 1000 == 3

    with pytest.raises(AssertionError, match="example\\(s\\) reached the assertions"):
        refuses_most()
    assert len(seen) >= 20


def test_rejected_examples_are_redrawn_and_every_counted_one_asserted():
    asserted = []

    @must_reach(15)
    @FEW
    @given(st.integers(0, 1000))
    def even_only(x):
        assume(x % 2 == 0)
        asserted.append(x)
        assert x % 2 == 0

    even_only()
    assert len(asserted) >= 15


def test_a_test_that_rejects_everything_fails():
    # As test_splits.PROPERTY: the filter health check is off, hypothesis itself refuses.
    @must_reach(1)
    @settings(FEW, suppress_health_check=[HealthCheck.filter_too_much])
    @given(st.integers())
    def rejects_everything(x):
        assume(False)

    with pytest.raises(Unsatisfiable):
        rejects_everything()
