import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
from monai.data import load_decathlon_datalist

from tests.conftest import PHI_MARKERS
from tl_med.errors import InputError
from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest, manifest_hash
from tl_med.sites import load_sites


def _site(ws, sites_file, name="east"):
    return load_sites(sites_file, ws.root).get(name)


def test_clean_site_converts_everything_and_manifest_is_a_decathlon_datalist(workspace):
    ws, sites_file = workspace
    result = ingest_site(_site(ws, sites_file), ws, task="liver")
    summary = result.report.summary()
    assert summary["reconciled"] and summary["quarantined"] == 0 and summary["skipped"] == 0
    assert summary["inputs"] == summary["converted"] == 5 * 10 + 5  # 5 studies × 10 slices + 5 labels (classes: not asked for)
    manifest = load_manifest(result.manifest_path)
    assert (len(manifest.training), len(manifest.validation), len(manifest.test)) == (2, 1, 2)
    items = load_decathlon_datalist(result.manifest_path, data_list_key="training")
    assert all(Path(i["image"]).is_file() and Path(i["label"]).is_file() for i in items)
    case = manifest.training[0]
    assert case.manufacturer == "GE MEDICAL SYSTEMS" and case.orientation == "LPS"
    assert case.spacing == (6.0, 6.0, 20.0) and case.acquisition["KVP"] == "100.0"


def test_ingest_is_idempotent(workspace):
    ws, sites_file = workspace
    first = manifest_hash(ingest_site(_site(ws, sites_file), ws, task="liver").manifest_path)
    second = manifest_hash(ingest_site(_site(ws, sites_file), ws, task="liver").manifest_path)
    assert first == second


def test_no_phi_reaches_outputs(workspace):
    ws, sites_file = workspace
    site = _site(ws, sites_file)
    ingest_site(site, ws, task="liver")
    first = next(site.dicom_dir.rglob("IM*"))
    ds = pydicom.dcmread(first)
    secrets = list(PHI_MARKERS) + [ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                   ds.FrameOfReferenceUID, ds.StudyDate, ds.PatientBirthDate]
    outputs = [p for d in (ws.data, ws.manifests, ws.reports) for p in d.rglob("*") if p.is_file()]
    assert outputs
    for path in outputs:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            import gzip

            blob = gzip.decompress(blob)
        for secret in secrets:
            assert secret.encode() not in blob, f"{secret!r} leaked into {path.relative_to(ws.root)}"
        assert not any(s in str(path) for s in secrets)
    header = nib.load(next((ws.data / "east" / "images").iterdir())).header
    assert header["descrip"].item() == b"" and header["aux_file"].item() == b""


def test_missing_or_empty_site_folder_is_a_clear_error(workspace):
    ws, sites_file = workspace
    site = _site(ws, sites_file)
    shutil.rmtree(site.dicom_dir)


    with pytest.raises(InputError, match=r"site 'east': DICOM folder .* does not exist"):
        ingest_site(site, ws, task="liver")
    site.dicom_dir.mkdir(parents=True)
    with pytest.raises(InputError, match="is empty"):
        ingest_site(site, ws, task="liver")


def test_splits_depend_on_the_data_not_on_the_deid_key(workspace):
    ws, sites_file = workspace
    site = _site(ws, sites_file)

    def split_shas(key: bytes) -> list[str]:
        manifest = load_manifest(ingest_site(site, ws, task="liver", key=key).manifest_path)
        return [c.image_sha256 for c in (*manifest.training, *manifest.validation, *manifest.test)]

    assert split_shas(b"a" * 32) == split_shas(b"b" * 32)


def test_flat_folder_without_extensions_with_a_dicomdir_gives_the_same_cases(workspace, tmp_path):
    """Studies and series mixed in one folder, files without extensions, a DICOMDIR present."""
    import pydicom.data

    ws, sites_file = workspace
    site = _site(ws, sites_file)
    nested = load_manifest(ingest_site(site, ws, task="liver").manifest_path)
    flat = tmp_path / "flat" / "dicom"
    flat.mkdir(parents=True)
    for k, path in enumerate(sorted(site.dicom_dir.rglob("IM*"))):
        shutil.copy(path, flat / f"x{k * 7919 % 1000:03d}{k}")  # shuffled, no extensions
    dicomdir = Path(pydicom.data.get_testdata_file("DICOMDIR", download=False))
    shutil.copy(dicomdir, flat / "DICOMDIR")
    shutil.copytree(site.labels_dir, flat.parent / "labels")
    moved = site.model_copy(update={"dicom_dir": flat, "labels_dir": flat.parent / "labels"})
    result = ingest_site(moved, ws, task="liver")
    summary = result.report.summary()
    assert summary["reconciled"] and summary["skipped"] == 1 and summary["quarantined"] == 0
    flat_manifest = load_manifest(result.manifest_path)
    assert [c.case_id for c in flat_manifest.training] == [c.case_id for c in nested.training]
    assert [c.image_sha256 for c in flat_manifest.test] == [c.image_sha256 for c in nested.test]


def test_worker_processes_give_the_same_result_as_one_process(workspace):
    ws, sites_file = workspace
    site = _site(ws, sites_file, "north")  # 96 files: above the pool's threshold

    def run(workers: int) -> str:
        options = site.ingest.model_copy(update={"workers": workers})
        for state in ws.data.rglob("ingest-state.json"):
            state.unlink()  # force a full conversion
        return manifest_hash(ingest_site(site.model_copy(update={"ingest": options}), ws,
                                         task="liver").manifest_path)

    assert run(1) == run(2)
