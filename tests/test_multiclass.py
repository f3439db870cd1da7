"""A multi-channel, multi-class task: the task's label map and channels in ``sites.yaml``, a
datalist whose items list one file per channel (or one 4-D file), per-class Dice and HD95."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.multichannel import AFFINE, CHANNELS, LABELS, case, write_sites_yaml
from tests.test_cli import tl_med
from tl_med.errors import InputError
from tl_med.evaluate import CaseMetrics, case_scores
from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import SiteConfig, SitesConfig, SplitSpec
from tl_med.workspace import Workspace


def test_task_label_map_and_channels_are_validated_in_one_line():
    site = {"name": "a", "role": "source", "datalist": "d.json"}
    ok = SitesConfig.model_validate({"labels": {0: "bg", 1: "core", 2: "oedema"}, "channels": CHANNELS,
                                     "sites": [site]})
    assert ok.labels == {"0": "bg", "1": "core", "2": "oedema"} and ok.n_channels == 2
    for bad, message in [({"labels": {0: "bg", 1: "a", 4: "b"}}, "label values must be 0..N-1"),
                         ({"labels": {1: "a"}}, "label values must be 0..N-1"),
                         ({"channels": ["T1", "T1"]}, "channel names must be non-empty and unique")]:
        with pytest.raises(ValueError, match=message):
            SitesConfig.model_validate({"sites": [site], **bad})
    with pytest.raises(ValueError, match="DICOM site.* a cannot pair series into channels"):
        SitesConfig.model_validate({"channels": CHANNELS, "sites": [{"name": "a", "role": "source",
                                                                     "dicom_dir": "d"}]})


def _save(folder, name, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), folder / name)
    return name


def test_channels_are_stacked_on_one_grid_and_every_bad_item_is_quarantined_with_its_reason(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    items = []
    image, label = case(rng)
    items.append({"image": [_save(folder, f"ok_{c}.nii.gz", image[..., i]) for i, c in enumerate(CHANNELS)],
                  "label": _save(folder, "ok_seg.nii.gz", label)})
    items.append({"image": _save(folder, "four_d.nii.gz", image), "label": _save(folder, "four_d_seg.nii.gz", label)})
    shifted = AFFINE.copy()
    shifted[0, 3] = 6.0  # FLAIR two voxels off: not co-registered
    items.append({"image": [_save(folder, "off_T1c.nii.gz", image[..., 0]),
                            _save(folder, "off_FLAIR.nii.gz", image[..., 1], shifted)],
                  "label": _save(folder, "off_seg.nii.gz", label)})
    items.append({"image": [_save(folder, f"three_{k}.nii.gz", image[..., 0]) for k in range(3)]})
    items.append({"image": _save(folder, "one.nii.gz", image[..., 0])})
    items.append({"image": _save(folder, "three_channels.nii.gz", np.concatenate([image, image[..., :1]], -1))})
    bad_label = label.copy()
    bad_label[0, 0, 0] = 3
    items.append({"image": [_save(folder, f"badlabel_{c}.nii.gz", image[..., i] + 1) for i, c in enumerate(CHANNELS)],
                  "label": _save(folder, "badlabel_seg.nii.gz", bad_label)})
    (folder / "datalist.json").write_text(json.dumps({"training": items}))
    site = SiteConfig(name="lake", datalist=folder / "datalist.json", modality="MR", split=SplitSpec(n_train=1, n_val=0))
    ws = Workspace(tmp_path / "ws").ensure()
    result = ingest_site(site, ws, task="toy", labels=LABELS, channels=CHANNELS)
    s = result.report.summary()
    assert s["reconciled"] and s["inputs"] == 16
    reasons = {o.file: o.reason for o in result.report.quarantined}
    assert "channel FLAIR is not on channel T1c's voxel grid" in reasons["off_FLAIR.nii.gz"]
    assert "co-register" in reasons["off_FLAIR.nii.gz"]
    assert "another channel of this case was quarantined (off_FLAIR.nii.gz)" in reasons["off_T1c.nii.gz"]
    assert reasons["off_seg.nii.gz"] == "label of a quarantined image"
    assert "3 image files where the task has 2 channels (T1c, FLAIR)" in reasons["three_0.nii.gz"]
    assert "a 3-D image where the task has 2 channels" in reasons["one.nii.gz"]
    assert "a 4-D image with 3 channels where the task has 2" in reasons["three_channels.nii.gz"]
    assert "unexpected values [3]" in reasons["badlabel_seg.nii.gz"]
    manifest = load_manifest(result.manifest_path)
    assert manifest.modality == {"0": "T1c", "1": "FLAIR"} and manifest.labels == LABELS
    assert manifest.n_labelled == 2 and len(manifest.unlabelled) == 1  # the bad label's image stays
    for entry in (*manifest.training, *manifest.test):
        written = nib.load(result.manifest_path.parent / entry.image)
        assert written.shape == (*entry.shape, 2) and np.allclose(written.affine, AFFINE)
        assert np.allclose(np.asanyarray(written.dataobj), image, atol=1e-4)  # channel order kept, values exact


def test_case_scores_are_per_class_and_summaries_name_each_class():
    label = np.zeros((12, 12, 12), np.uint8)
    label[2:6, 2:6, 2:6], label[7:11, 7:11, 7:11] = 1, 2
    pred = label.copy()
    pred[7:11, 7:11, 7:9] = 0  # half of class 2 missed
    dice, hd95 = case_scores(pred, label, 3, (1.0, 1.0, 1.0))
    assert dice[0] == pytest.approx(1.0) and dice[1] == pytest.approx(2 * 32 / (32 + 64))
    assert hd95[0] == pytest.approx(0.0) and hd95[1] > 0
    metrics = CaseMetrics(["a"], [sum(dice) / 2], [sum(hd95) / 2], classes=["core", "peritumoural oedema"],
                          class_dice=[dice], class_hd95=[hd95])
    summary = metrics.summary()
    assert summary["dice_core"] == pytest.approx(1.0) and "dice_peritumoural_oedema" in summary
    assert metrics.to_csv().splitlines()[0] == ("case_id,dice,hd95_mm,dice_core,hd95_core_mm,"
                                                "dice_peritumoural_oedema,hd95_peritumoural_oedema_mm")
    assert CaseMetrics(["a"], [0.5], [1.0]).summary().keys() == {"dice", "hd95", "n_cases"}  # binary: as before


@pytest.mark.e2e
def test_two_channel_three_class_site_trains_reports_per_class_dice_and_predicts(tmp_path):
    from mlflow import MlflowClient

    sites = write_sites_yaml(tmp_path)
    common = ("--workspace", str(tmp_path), "--sites", str(sites), "--profile", "tiny")
    proc = tl_med("run", "--json", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = json.loads(proc.stdout)["sites"][0]
    assert set(site["dice_per_class"]) == {"core", "oedema"}
    for scores in site["dice_per_class"].values():
        assert set(scores) == {"source_only", "from_scratch", "adapted"}
        assert all(0 <= v <= 1 for v in scores.values())
    assert site["dice"]["adapted"] == pytest.approx(sum(s["adapted"] for s in site["dice_per_class"].values()) / 2,
                                                    abs=1e-4)
    client = MlflowClient(Workspace(tmp_path).tracking_uri)
    version = client.get_model_version_by_alias("tlmed-brats-toy-tgt", "challenger")  # the registry's task name
    run = client.get_run(version.run_id)
    assert {"test_dice_core", "test_dice_oedema", "test_hd95_core", "test_hd95_oedema"} <= set(run.data.metrics)
    spec = json.loads(open(client.download_artifacts(run.info.run_id, "package/tlmed-model.json")).read())
    assert spec["channels"] == list(CHANNELS) and spec["labels"] == LABELS
    assert (spec["network"]["in_channels"], spec["network"]["out_channels"]) == (2, 3)
    csv = open(client.download_artifacts(run.info.run_id, "metrics/test_per_case.csv")).read()
    assert csv.splitlines()[0].endswith("dice_core,hd95_core_mm,dice_oedema,hd95_oedema_mm")
    # the registered model applied to a new two-channel study (one 4-D NIfTI) gives a three-class mask
    image, _ = case(np.random.default_rng(9))
    nib.save(nib.Nifti1Image(image, AFFINE), tmp_path / "new.nii.gz")
    proc = tl_med("predict", str(tmp_path / "new.nii.gz"), "--site", "tgt", "--out", str(tmp_path / "out"),
                  "--model", "models:/tlmed-brats-toy-tgt@challenger",
                  "--workspace", str(tmp_path), "--sites", str(sites))
    assert proc.returncode == 0, proc.stderr[-3000:]
    mask = nib.load(tmp_path / "out" / "new.nii.gz")
    assert mask.shape == image.shape[:3] and set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1, 2}
    nib.save(nib.Nifti1Image(image[..., 0], AFFINE), tmp_path / "t1c_only.nii.gz")
    proc = tl_med("predict", str(tmp_path / "t1c_only.nii.gz"), "--site", "tgt", "--out", str(tmp_path / "out"),
                  "--model", "models:/tlmed-brats-toy-tgt@challenger", "--workspace", str(tmp_path),
                  "--sites", str(sites))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "the model takes 2 channel(s) (T1c, FLAIR) and this image has 1" in proc.stdout + proc.stderr


def test_a_multi_channel_model_refuses_a_one_channel_dicom_series_in_one_line():
    import torch

    from tl_med.config import PipelineConfig
    from tl_med.inference import Predictor
    from tl_med.models.spec import ModelSpec
    from tl_med.models.zoo import build_network

    spec = ModelSpec.from_config(PipelineConfig.profile("tiny"), task="toy", site="s", modality="MR", labels=LABELS,
                                 channels=CHANNELS)
    assert (spec.n_channels, spec.n_classes) == (2, 3)
    predictor = Predictor(build_network(spec.network), spec, torch.device("cpu"))
    with pytest.raises(InputError, match=r"takes 2 co-registered channels \(T1c, FLAIR\); a DICOM series is one"):
        predictor.predict((np.zeros((8, 8, 8), np.float32), AFFINE))
