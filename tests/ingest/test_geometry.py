from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tl_med.ingest.geometry import build_geometry, group_series
from tl_med.ingest.scan import SliceHeader


def _stack(n: int = 5, step: float = 3.0, shuffle: bool = True) -> list[SliceHeader]:
    base = SliceHeader(path=Path("x"), rel="x", study_uid="1", series_uid="1.1", accession="", modality="CT",
                       manufacturer="", model="", rows=4, cols=4, iop=(1, 0, 0, 0, 1, 0), ipp=(0, 0, 0),
                       pixel_spacing=(0.5, 0.7), instance_number=0, echo="", acquisition=())
    stack = [replace(base, rel=f"s{k}", ipp=(-10.0, -20.0, k * step), instance_number=n - k) for k in range(n)]
    return list(reversed(stack)) if shuffle else stack


def test_orders_by_position_not_instance_number_and_builds_ras_affine():
    geom = build_geometry(_stack())
    assert [s.rel for s in geom.slices] == ["s0", "s1", "s2", "s3", "s4"]
    assert geom.spacing == (0.7, 0.5, 3.0)
    np.testing.assert_allclose(geom.affine[:3, 3], [10.0, 20.0, 0.0])  # LPS (-10,-20,0) in RAS
    np.testing.assert_allclose(np.diag(geom.affine)[:3], [-0.7, -0.5, 3.0])


def test_missing_slice_is_refused_with_a_reason():
    stack = _stack(6)
    del stack[2]
    reason = build_geometry(stack)
    assert isinstance(reason, str) and "uneven slice spacing" in reason and "missing slice" in reason


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s[:1], "single-slice"),
    (lambda s: s + [replace(s[0], rel="dup")], "duplicate slice positions"),
    (lambda s: [replace(x, ipp=(x.ipp[0], x.ipp[1] + 0.3 * x.ipp[2], x.ipp[2])) for x in s], "gantry tilt"),
])
def test_bad_stacks_are_refused(mutate, words):
    assert words in build_geometry(mutate(_stack()))


def test_groups_split_a_series_by_orientation():
    stack = _stack()
    localizer = replace(stack[0], rel="loc", iop=(0, 1, 0, 0, 0, -1))
    assert sorted(len(g) for g in group_series(stack + [localizer]).values()) == [1, 5]
