"""`tl-med export`: a MONAI bundle that MONAI's own tools accept and that segments like `tl-med predict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.test_inference import AXIAL, SAGITTAL, _case
from tl_med.config import InferenceConfig, NetworkConfig, PreprocessConfig
from tl_med.export.bundle import SCHEMA_FILE, export_bundle
from tl_med.inference import Predictor
from tl_med.models.spec import ModelSpec, load_package, save_package
from tl_med.models.zoo import build_network

OFFLINE = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "MONAI_DATA_DIRECTORY": "/nonexistent"}


def _package(tmp_path: Path, landmarks: tuple[float, ...] | None, channels: tuple[str, ...] = ()) -> Path:
    labels = {"0": "background", "1": "liver", **({"2": "tumour"} if channels else {})}
    spec = ModelSpec(task="liver", site="east", modality="CT", labels=labels, channels=channels,
                     network=NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1,
                                           in_channels=max(1, len(channels)), out_channels=len(labels)),
                     preprocess=PreprocessConfig(spacing=(3.0, 3.0, 4.0), patch_size=(16, 16, 16)),
                     inference=InferenceConfig(overlap=0.25, sw_batch_size=2), landmarks=landmarks)
    torch.manual_seed(3)
    return save_package(tmp_path / "package", build_network(spec.network), spec)  # random weights: a varied mask


def _monai_bundle(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True,
                          timeout=600, env=OFFLINE)


@pytest.mark.parametrize("variant", ["plain", "harmonised", "two-channel-three-class"])
def test_the_bundle_passes_monai_checks_and_segments_like_predict(tmp_path, variant):
    from tl_med.data.harmonise import PERCENTILES

    landmarks = tuple(np.linspace(0.0, 950.0, len(PERCENTILES))) if variant == "harmonised" else None
    channels = ("CT", "CT-late") if variant == "two-channel-three-class" else ()
    bundle = export_bundle(_package(tmp_path, landmarks, channels), tmp_path / "bundle", name="tlmed-liver-east",
                           version="3", source="tlmed-liver-east v3 (approved by test)", dice=0.8123)
    assert sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and "__pycache__" not in
                  str(p)) == sorted(["configs/metadata.json", "configs/inference.json", "models/model.pt",
                                     "docs/README.md", *(["scripts/__init__.py", "scripts/harmonise.py"]
                                                         if landmarks else [])])
    # MONAI's verifier, offline: the schema ships with tl_med, so nothing is downloaded
    done = _monai_bundle("verify_metadata", "--meta_file", str(bundle / "configs/metadata.json"),
                         "--filepath", str(SCHEMA_FILE))
    assert done.returncode == 0 and "metadata is verified with no error" in done.stdout + done.stderr, done.stderr
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["eval_metrics"] == {"mean_dice": 0.8123} and meta["version"] == "3.0.0"
    image_format = meta["network_data_format"]["inputs"]["image"]
    assert image_format["num_channels"] == max(1, len(channels))
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 3 if channels else 2
    # MONAI's runner segments every imagesTs/ image like tl_med's Predictor, on each image's own grid
    (data := tmp_path / "data" / "imagesTs").mkdir(parents=True)
    cases = [_case(data, AXIAL, name="axial")[0], _case(data, SAGITTAL, shape=(30, 44, 38), name="sagittal")[0]]
    for c in cases:
        Path(c["label"]).unlink()
        if channels:  # a second, co-registered channel: one 4-D NIfTI, channels last
            img = nib.load(c["image"])
            first = np.asanyarray(img.dataobj, dtype=np.float32)
            nib.save(nib.Nifti1Image(np.stack([first, 0.5 * first[::-1] + 20.0], -1), img.affine), c["image"])
    done = _monai_bundle("run", "--config_file", str(bundle / "configs/inference.json"), "--bundle_root", str(bundle),
                         "--dataset_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[:6000]
    predictor = Predictor(*load_package(tmp_path / "package"), torch.device("cpu"))
    for c in cases:
        ours = predictor.predict(c["image"])
        theirs = nib.load(tmp_path / "out" / f"{Path(c['image']).name.removesuffix('.nii.gz')}_seg.nii.gz")
        mask = np.asanyarray(theirs.dataobj).squeeze()
        assert mask.shape == ours.mask.shape and np.allclose(theirs.affine, ours.affine, atol=1e-4)
        assert 0.05 < (ours.mask > 0).mean() < 0.95, "a degenerate mask would make the comparison meaningless"
        assert not channels or set(np.unique(ours.mask)) == {0, 1, 2}
        assert (mask == ours.mask).mean() >= 0.999


def test_an_existing_folder_is_never_overwritten(tmp_path):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        export_bundle(_package(tmp_path, None), tmp_path / "bundle", name="n", version="1", source="s")
    assert (tmp_path / "bundle" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("name", ["DynUNet", "SegResNet", "AttentionUnet", "bundle"])
def test_the_bundle_network_def_builds_the_trained_network_for_every_catalogue_network(tmp_path, name):
    """MONAI's ConfigParser instantiates the exported network_def, and the weights load strictly."""
    from monai.bundle import ConfigParser

    from tests.adapt.test_strategies import TINY

    spec = ModelSpec(task="liver", site="east", modality="CT", labels={"0": "background", "1": "liver"},
                     network=NetworkConfig(name=name, **TINY[name]),
                     preprocess=PreprocessConfig(spacing=(3.0, 3.0, 4.0), patch_size=(16, 16, 16)))
    package = save_package(tmp_path / "package", build_network(spec.network), spec)
    bundle = export_bundle(package, tmp_path / "bundle", name="tlmed-liver-east", version="1", source="test")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["device"] = "cpu"
    network = parser.get_parsed_content("network_def")
    assert type(network).__name__ == (TINY[name]["definition"]["_target_"] if name == "bundle" else name)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True), strict=True)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert f"A MONAI {type(network).__name__} adapted by tl_med" in meta["description"]
