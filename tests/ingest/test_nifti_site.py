"""A site defined by existing NIfTI data (a decathlon datalist) ingests like a DICOM site."""

import gzip
import json
import struct

import nibabel as nib

from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import SiteConfig, SplitSpec


def nifti_site_from(ingested_ws, site: str, folder):
    """Write the ingested ``site``'s volumes as a plain NIfTI datalist site in ``folder``."""
    manifest = load_manifest(ingested_ws.site_manifest(site))
    items = []
    for k, case in enumerate((*manifest.training, *manifest.validation, *manifest.test)):
        for key, rel in (("image", case.image), ("label", case.label)):
            img = nib.load(ingested_ws.manifests / rel)
            img.header["descrip"] = b"QXPATIENT NAME IN DESCRIP"
            nib.save(img, folder / f"{key}_{k}.nii.gz")
        items.append({"image": f"image_{k}.nii.gz", "label": f"label_{k}.nii.gz"})
    (folder / "datalist.json").write_text(json.dumps({"training": items}))
    return folder / "datalist.json"


def test_datalist_site_is_validated_copied_and_cleaned(ingested, workspace, tmp_path):
    src_ws, _ = ingested
    ws, _ = workspace
    datalist = nifti_site_from(src_ws, "east", tmp_path)
    bad = tmp_path / "image_0.nii.gz"  # nibabel will not write a NaN affine: patch the header bytes
    raw = bytearray(gzip.decompress(bad.read_bytes()))
    raw[252:254] = struct.pack("<h", 0)  # qform_code 0: the sform is the only affine
    raw[280:284] = struct.pack("<f", float("nan"))  # srow_x[0]
    bad.write_bytes(gzip.compress(bytes(raw)))
    site = SiteConfig(name="lakeside", datalist=datalist, modality="CT", split=SplitSpec(n_train=2, n_val=1))
    result = ingest_site(site, ws, task="liver")
    summary = result.report.summary()
    reasons = {o.file: o.reason for o in result.report.quarantined}
    assert summary["reconciled"] and summary["inputs"] == 10 and summary["quarantined"] == 2
    assert "non-finite or singular affine" in reasons["image_0.nii.gz"]
    manifest = load_manifest(result.manifest_path)
    assert manifest.n_labelled == 4 and all(c.source == "nifti" for c in manifest.training)
    for case in manifest.training:
        header = nib.load(result.manifest_path.parent / case.image).header
        assert header["descrip"].item() == b""
        assert "image_" not in case.image  # input names never reach the workspace
