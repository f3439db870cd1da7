from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tl_med.ingest.convert import _resample
from tl_med.ingest.geometry import build_geometry, group_series
from tl_med.ingest.header import Frame


def _stack(n: int = 5, step: float = 3.0, shuffle: bool = True) -> list[Frame]:
    base = Frame(path=Path("x"), rel="x", file_sha256="", index=None, study_uid="1", series_uid="1.1",
                 accession="", patient="", modality="CT", manufacturer="", model="", rows=4, cols=4,
                 iop=(1, 0, 0, 0, 1, 0), ipp=(0, 0, 0), pixel_spacing=(0.5, 0.7), thickness=step,
                 slope=1.0, intercept=0.0, echo="", stack="", acquisition=(), native=None)
    stack = [replace(base, rel=f"s{k}", ipp=(-10.0, -20.0, k * step)) for k in range(n)]
    return list(reversed(stack)) if shuffle else stack


def test_orders_by_position_and_builds_ras_affine():
    geom = build_geometry(_stack())
    assert [s.rel for s in geom.frames] == ["s0", "s1", "s2", "s3", "s4"]
    assert geom.spacing == (0.7, 0.5, 3.0)
    np.testing.assert_allclose(geom.affine[:3, 3], [10.0, 20.0, 0.0])  # LPS (-10,-20,0) in RAS
    np.testing.assert_allclose(np.diag(geom.affine)[:3], [-0.7, -0.5, 3.0])


def test_single_slice_uses_its_thickness():
    geom = build_geometry(_stack()[:1])
    assert geom.shape == (4, 4, 1) and geom.spacing[2] == 3.0


def test_missing_slice_is_refused_with_a_reason():
    stack = _stack(6)
    del stack[2]
    reason = build_geometry(stack)
    assert isinstance(reason, str) and "uneven slice spacing" in reason and "missing slice" in reason


def test_missing_slice_is_resampled_and_flagged_under_the_resample_policy():
    stack = _stack(6, shuffle=False)
    del stack[2]  # positions 0, 3, 9, 12, 15
    geom = build_geometry(stack, policy="resample")
    assert geom.shape == (4, 4, 6) and "missing slice" in geom.correction.note
    vol = np.stack([np.full((4, 4), z, np.float32) for z in (0, 3, 9, 12, 15)], axis=-1)
    out = _resample(vol, geom.correction)
    np.testing.assert_allclose(out[0, 0], [0, 3, 6, 9, 12, 15])  # the gap filled by interpolation


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid():
    tilted = [replace(f, ipp=(f.ipp[0], f.ipp[1] + 0.7 * f.ipp[2] / 3.0, f.ipp[2])) for f in _stack(shuffle=False)]
    assert "gantry tilt" in build_geometry(tilted)
    geom = build_geometry(tilted, policy="resample")
    np.testing.assert_allclose(geom.correction.shifts[:, 1], [0, 1.4, 2.8, 4.2, 5.6])  # 0.7 mm/0.5 mm per slice
    assert abs(np.dot(geom.affine[:3, 2], geom.affine[:3, 1])) < 1e-9  # slice axis orthogonal again


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s + [replace(s[0], rel="dup")], "duplicate slice positions"),
    (lambda s: [replace(x, iop=(1, 0, 0, 0.5, 1, 0)) for x in s], "not two orthonormal vectors"),
])
def test_bad_stacks_are_refused_under_either_policy(mutate, words):
    assert words in build_geometry(mutate(_stack()))
    assert words in build_geometry(mutate(_stack()), policy="resample")


def test_groups_split_a_series_by_orientation_echo_and_stack():
    stack = _stack()
    localizer = replace(stack[0], rel="loc", iop=(0, 1, 0, 0, 0, -1))
    echo2 = [replace(f, echo="2") for f in stack]
    assert sorted(len(g) for g in group_series(stack + [localizer] + echo2).values()) == [1, 5, 5]
