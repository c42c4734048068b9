"""Property tests that cannot pass without asserting (issue 22).

A hypothesis test whose body returns early when the generated input is refused (too little
data to split, junk the parser rejects) passes whatever fraction of its examples got to the
assertions, 0% included. ``must_reach(n)`` counts the examples whose body ran to its end and
fails the test when fewer than ``n`` did:

    @must_reach(30)
    @settings(max_examples=40)
    @given(...)
    def test_x(...):
        plan = ...
        assume(plan is not None)   # rejected: hypothesis draws another example, not counted
        ...                        # counted when the body returns
        return NOT_REACHED         # or: this example asserted nothing (not counted)

It wraps the body through ``test.hypothesis.inner_test`` (hypothesis's documented hook for
wrapping what runs per example), so shrinking and replays work as before.
"""

from __future__ import annotations

import functools

NOT_REACHED = object()
"""Returned by a property test's body for an example that reached no assertion."""


def must_reach(minimum: int):
    """Fail a ``@given`` test unless at least ``minimum`` examples ran to the end of its body."""

    def wrap(test):
        inner = test.hypothesis.inner_test
        count = [0]

        @functools.wraps(inner)
        def counted(*args, **kwargs):
            if inner(*args, **kwargs) is not NOT_REACHED:
                count[0] += 1

        test.hypothesis.inner_test = counted

        @functools.wraps(test)
        def run(*args, **kwargs):
            count[0] = 0
            test(*args, **kwargs)
            assert count[0] >= minimum, (
                f"only {count[0]} example(s) reached the assertions (at least {minimum} must): "
                "the generated inputs are mostly refused, so the test asserts next to nothing")

        return run

    return wrap
