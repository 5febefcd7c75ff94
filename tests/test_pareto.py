"""Dominance and hypervolume on hand-made points."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paretopress.search.pareto import hypervolume_2d, non_dominated


def test_hypervolume_of_known_fronts():
    assert hypervolume_2d([(1.0, 1.0)], (3.0, 2.0)) == pytest.approx(2.0)
    assert hypervolume_2d([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0)) == pytest.approx(3.0)  # 2x1 + 1x2 - 1x1 overlap
    assert hypervolume_2d([(4.0, 0.0), (0.0, 5.0)], (3.0, 3.0)) == 0.0  # beyond the reference: nothing


def test_dominated_points_add_nothing():
    front = [(1.0, 2.0), (2.0, 1.0)]
    assert hypervolume_2d([*front, (2.5, 2.5), (1.0, 2.0)], (3.0, 3.0)) == hypervolume_2d(front, (3.0, 3.0))


points = st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), max_size=12)


@given(points, points)
def test_more_points_never_shrink_the_hypervolume(a, b):
    reference = (10.0, 10.0)
    assert hypervolume_2d(a + b, reference) >= hypervolume_2d(a, reference) - 1e-9


@given(points)
def test_non_dominated_points_dominate_the_rest(pts):
    front = non_dominated(pts)
    for i, p in enumerate(pts):
        if i not in front:
            assert any(all(a <= b for a, b in zip(pts[j], p, strict=True)) and pts[j] != p for j in front)
    assert hypervolume_2d([pts[i] for i in front], (10.0, 10.0)) == pytest.approx(hypervolume_2d(pts, (10.0, 10.0)))
