"""Shared fixtures: tiny synthetic sites (downsampled 4×), an ingested workspace, a tracker."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tl_med.quiet import KNOWN_WARNINGS, silence_known_noise

silence_known_noise()  # before MONAI is imported, as the CLI does


def pytest_configure(config: pytest.Config) -> None:
    """The same filters as pytest ini lines: pytest re-enables DeprecationWarnings per test and per
    collection, ahead of filters installed earlier."""
    for category, message, _ in KNOWN_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}")

from tl_med.config import PipelineConfig
from tl_med.data.synthetic import TINY_SITES, generate_sites
from tl_med.ingest.site import ingest_site
from tl_med.sites import load_sites
from tl_med.tracking import Tracker
from tl_med.workspace import Workspace

TINY_SITES_YAML = (Path(__file__).resolve().parent.parent / "data_manifests" / "sites-tiny.yaml").read_text()

# Distinctive fake PHI the generator writes into every study (see tl_med.data.synthetic).
PHI_MARKERS = ("ZZFAKE", "FAKEPID", "ZZACC", "Synthetic General Hospital", "ZZSTATION", "ZZSERIAL",
               "ZZDOC", "ZZSTUDY", "ZZSERIES")


@pytest.fixture(scope="session")
def tiny_incoming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw tiny sites (DICOM + labels), generated once per session; copy before modifying."""
    root = tmp_path_factory.mktemp("incoming")
    generate_sites(root, TINY_SITES, seed=0, downsample=4)
    return root


def make_workspace(root: Path, incoming: Path) -> tuple[Workspace, Path]:
    ws = Workspace(root).ensure()
    shutil.rmtree(ws.incoming)
    shutil.copytree(incoming, ws.incoming)
    (ws.incoming / "east" / "inbox").mkdir()  # sites-tiny.yaml names it
    sites_file = root / "sites.yaml"
    sites_file.write_text(TINY_SITES_YAML)
    return ws, sites_file


@pytest.fixture
def workspace(tmp_path: Path, tiny_incoming: Path) -> tuple[Workspace, Path]:
    """A fresh workspace holding a copy of the tiny sites and their sites.yaml."""
    return make_workspace(tmp_path / "ws", tiny_incoming)


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory, tiny_incoming: Path) -> tuple[Workspace, Path]:
    """A session workspace whose tiny sites are already ingested (read-only use, please)."""
    ws, sites_file = make_workspace(tmp_path_factory.mktemp("ingested") / "ws", tiny_incoming)
    sites = load_sites(sites_file, ws.root)
    for site in sites.sites:
        ingest_site(site, ws, **sites.task_fields())
    return ws, sites_file


@pytest.fixture
def tiny_cfg() -> PipelineConfig:
    return PipelineConfig.profile("tiny")


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tlmed-test", artifact_root=tmp_path / "artifacts")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """A session-wide temporary Prefect API (``prefect_test_harness``) with its own PREFECT_HOME."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):  # a first migration on a busy machine
        yield
    mp.undo()


def tiny_start_weights(path: Path) -> Path:
    """A checkpoint of the tiny network (seeded), for flows that start from given weights."""
    import torch

    from tl_med.models.zoo import build_network

    torch.manual_seed(0)
    torch.save(build_network(PipelineConfig.profile("tiny").network).state_dict(), path)
    return path


def series_of(study: Path) -> list[pydicom.Dataset]:
    files = [p for p in study.rglob("*") if p.is_file()]
    return sorted((pydicom.dcmread(p) for p in files), key=lambda d: int(d.InstanceNumber))


def make_seg(study: Path, mask: np.ndarray, segment: int = 1, omit_empty: bool = True) -> pydicom.Dataset:
    """A BINARY SEG of ``mask`` (slices, rows, cols; 0/1) on the study's images."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    images = series_of(study)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"segment {n}", segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n in range(1, segment + 1)]
    pixels = mask.astype(np.uint8) * segment if segment > 1 else mask.astype(bool)
    return hd.seg.Segmentation(
        source_images=images, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=90,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="tl_med tests",
        manufacturer_model_name="synthetic", software_versions="0", device_serial_number="0",
        omit_empty_frames=omit_empty)
