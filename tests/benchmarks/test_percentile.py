"""The benchmarks' one percentile: nearest rank, so a high percentile of few runs is never below the median."""

from __future__ import annotations

import math

from benchmarks.stack import percentile


def test_nearest_rank() -> None:
    runs = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0, 10.0]  # any order
    assert [percentile(runs, p) for p in (0, 10, 50, 90, 95, 99, 100)] == [1.0, 1.0, 5.0, 9.0, 10.0, 10.0, 10.0]
    assert percentile([4.0], 99) == 4.0
    assert math.isnan(percentile([], 50))
