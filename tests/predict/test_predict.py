"""`tl-med predict` as a hospital uses it: DICOM series and NIfTI in, masks on each input's own grid
and a valid DICOM SEG out, bad inputs reported with ingest's reasons while the rest go on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch

from tests.test_inference import Bright
from tests.validators import dciodvfy_errors
from tl_med.config import InferenceConfig, NetworkConfig, PreprocessConfig
from tl_med.inference import Predictor
from tl_med.ingest.seg import seg_label
from tl_med.models.spec import ModelSpec, save_package
from tl_med.predict.inputs import collect
from tl_med.predict.run import predict_inputs

LABELS = {"0": "background", "1": "liver"}


def _spec(modality: str = "CT") -> ModelSpec:
    return ModelSpec(task="liver", site="east", modality=modality, labels=LABELS,
                     network=NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0),
                     preprocess=PreprocessConfig(spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16)),
                     inference=InferenceConfig(sw_batch_size=2))


def _studies(root: Path) -> list[Path]:
    return sorted(p for p in (root / "east" / "dicom").iterdir() if p.is_dir())


def _true_label(incoming: Path, study: Path) -> nib.Nifti1Image:
    uid = pydicom.dcmread(next(p for p in study.rglob("*") if p.is_file()), stop_before_pixels=True).SeriesInstanceUID
    return nib.load(incoming / "east" / "labels" / f"{uid}.nii.gz")


def test_a_dicom_series_gives_a_mask_on_its_own_grid_and_a_valid_seg(tiny_incoming, tmp_path):
    study = _studies(tiny_incoming)[0]
    (item,) = collect([study])
    (outcome,) = predict_inputs(Predictor(Bright(), _spec(), torch.device("cpu")), [item], tmp_path, model="test v1")
    assert outcome.ok and outcome.nifti == tmp_path / f"{study.name}.nii.gz" and outcome.volumes_ml["liver"] > 0
    mask, truth = nib.load(outcome.nifti), _true_label(tiny_incoming, study)
    assert mask.shape == truth.shape and np.allclose(mask.affine, truth.affine, atol=1e-4)  # the series' grid
    assert not any(mask.header[k].item() for k in ("descrip", "aux_file", "db_name"))  # nothing rides along
    # the SEG: valid, references its source series, and reads back to the same mask
    assert dciodvfy_errors(outcome.seg) == []
    seg = pydicom.dcmread(outcome.seg)
    source = pydicom.dcmread(next(p for p in study.rglob("*") if p.is_file()), stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    back = seg_label(outcome.seg, mask.shape, mask.affine, allowed={0, 1})
    assert not isinstance(back, str) and np.array_equal(back, np.asanyarray(mask.dataobj))
    # the same prediction again has the same UIDs: storing it twice replaces it in the PACS
    (again,) = predict_inputs(Predictor(Bright(), _spec(), torch.device("cpu")), [item], tmp_path / "again",
                              model="test v1")
    second = pydicom.dcmread(again.seg, stop_before_pixels=True)
    assert (second.SOPInstanceUID, second.SeriesInstanceUID) == (seg.SOPInstanceUID, seg.SeriesInstanceUID)
    (other,) = predict_inputs(Predictor(Bright(), _spec(), torch.device("cpu")), [item], tmp_path / "v2",
                              model="test v2")
    assert pydicom.dcmread(other.seg, stop_before_pixels=True).SeriesInstanceUID != seg.SeriesInstanceUID


def test_a_ct_model_refuses_an_mr_series_unless_forced(tmp_path):
    from tl_med.data.synthetic import SyntheticSite, generate_sites

    generate_sites(tmp_path / "in", [SyntheticSite("west", "west", 1)], seed=0, downsample=4)
    study = next(p for p in (tmp_path / "in" / "west" / "dicom").iterdir() if p.is_dir())
    predictor = Predictor(Bright(), _spec("CT"), torch.device("cpu"))
    (refused,) = predict_inputs(predictor, collect([study]), tmp_path / "out", model="m")
    assert refused.reason == "the model was trained on CT and this series is MR (--force applies it anyway)"
    assert not (tmp_path / "out" / f"{study.name}.nii.gz").exists()
    (forced,) = predict_inputs(predictor, collect([study]), tmp_path / "out", model="m", force=True)
    assert forced.ok and dciodvfy_errors(forced.seg) == []  # sagittal, descending instances: still valid


def _tl_med(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_med.cli", *args], capture_output=True, text=True, timeout=600)


def test_bad_inputs_get_ingests_reasons_and_the_rest_are_segmented(tiny_incoming, tmp_path):
    good, gap, other = _studies(tiny_incoming)[:3]
    broken = tmp_path / "broken"
    shutil.copytree(gap, broken)
    slices = sorted(p for p in broken.rglob("*") if p.is_file())
    slices[len(slices) // 2].unlink()  # a missing slice: ingest refuses the series
    truncated = tmp_path / "truncated"
    shutil.copytree(other, truncated)
    first = sorted(p for p in truncated.rglob("*") if p.is_file())[0]
    first.write_bytes(first.read_bytes()[:600])
    torch.manual_seed(0)
    from tl_med.models.zoo import build_network

    package = save_package(tmp_path / "pkg", build_network(_spec().network), _spec())
    proc = _tl_med("predict", str(good), str(broken), str(truncated), str(tmp_path / "scan.nii.gz"), "--site", "east",
                   "--model", str(package), "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 2, proc.stderr
    outputs = {o["name"]: o for o in json.loads(proc.stdout)["outputs"]}
    assert outputs[good.name]["error"] is None and Path(outputs[good.name]["seg"]).is_file()
    assert outputs["broken"]["error"].startswith("series rejected: ") and "missing slice" in outputs["broken"]["error"]
    bad_file = outputs[f"truncated/{first.relative_to(truncated)}"]["error"]
    assert bad_file == "image without Pixel Data (file truncated, or the image was never stored)", bad_file
    assert outputs["scan"]["error"] == "no such file or folder"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{good.name}.nii.gz", f"{good.name}.seg.dcm", "truncated.nii.gz", "truncated.seg.dcm"])


def test_localizers_are_not_segmented_and_a_bad_out_folder_is_one_line(tiny_incoming, tmp_path):
    study = _studies(tiny_incoming)[0]
    scout = tmp_path / "scout"
    scout.mkdir()
    shutil.copy(sorted(p for p in study.rglob("*") if p.is_file())[0], scout / "0001.dcm")
    (item,) = collect([scout])
    assert item.reason == "1-slice series (a localizer or a single image): not a volume to segment"
    torch.manual_seed(0)
    from tl_med.models.zoo import build_network

    package = save_package(tmp_path / "pkg", build_network(_spec().network), _spec())
    (tmp_path / "afile").write_text("x")
    proc = _tl_med("predict", str(study), "--site", "east", "--model", str(package), "--out", str(tmp_path / "afile"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --out {tmp_path / 'afile'}: cannot write there (FileExistsError)"]


def test_no_champion_is_refused_with_the_versions_listed(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e", artifact_location=str(tmp_path / "a"))).info.run_id
    client.create_registered_model("tlmed-liver-east")
    client.create_model_version("tlmed-liver-east", f"runs:/{run}/model", run_id=run, tags={"test_dice": "0.81"})
    client.set_registered_model_alias("tlmed-liver-east", "challenger", "1")
    proc = subprocess.run([sys.executable, "-m", "tl_med.cli", "predict", "x.nii.gz", "--site", "east", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: tlmed-liver-east has no champion: approve a version first (tl-med approve); versions: "
        "v1 (challenger) test Dice 0.81"]


def test_nothing_identifying_leaves_predict_but_the_seg_references_the_original_study(tiny_incoming, tmp_path):
    """Identifying values planted in a series never reach predict's output, JSON, file names or NIfTI;
    the SEG (which goes back to the PACS) references the original study and carries no private tags
    or free text from the source."""
    from tests.phi import PLANTED, plant_phi, text_of

    study = tmp_path / "s1"
    shutil.copytree(_studies(tiny_incoming)[1], study)
    uids = plant_phi(study)
    torch.manual_seed(0)
    from tl_med.models.zoo import build_network

    package = save_package(tmp_path / "pkg", build_network(_spec().network), _spec())
    outputs = []
    for fmt in ((), ("--json",)):
        proc = _tl_med("predict", str(study), "--site", "east", "--model", str(package), "--out",
                       str(tmp_path / "out"), *fmt)
        assert proc.returncode == 0, proc.stderr
        outputs.append((proc.stdout + proc.stderr).encode())
    secrets = [v.encode() for v in PLANTED.values()] + [b"QXPRIVATEPHI", b"QXPRIVATE2"] + [u.encode() for u in uids]
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["s1.nii.gz", "s1.seg.dcm"]
    for blob in [*outputs, text_of(written[0])]:
        assert not [s for s in secrets if s in blob]
    seg = written[1].read_bytes()
    for s in (b"QXPRIVATEPHI", b"QXPRIVATE2", b"QX PLANTED SERIES DESC", b"QX PLANTED COMMENT"):
        assert s not in seg
    ds = pydicom.dcmread(written[1])
    source = pydicom.dcmread(next(p for p in study.rglob("*") if p.is_file()), stop_before_pixels=True)
    assert (ds.StudyInstanceUID, ds.PatientID, ds.AccessionNumber) == (
        source.StudyInstanceUID, PLANTED["PatientID"], PLANTED["AccessionNumber"])  # it belongs with its study
