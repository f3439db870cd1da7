"""The preprocessing fan-out on a Dask cluster (``prefect-dask``): a LocalCluster of two worker
processes does the same work the default runner does."""

from __future__ import annotations

import os

import pytest
import torch

from tl_med.config import PipelineConfig, PreprocessConfig
from monai.transforms import Compose

from tl_med.data.transforms import cache_file, preprocessing

pytestmark = pytest.mark.e2e


def test_preprocessing_fans_out_over_two_dask_worker_processes(prefect_server, ingested):
    from flows.preprocess import dask_runner, preprocess_sites
    from flows.tasks import manifest_items

    ws, _ = ingested
    base = PipelineConfig.profile("tiny")
    # a grid no other test uses, so every case is computed here rather than found in a cache
    pre = PreprocessConfig.model_validate({**base.preprocess.model_dump(), "spacing": (7.0, 7.0, 7.0)})
    cfg = PipelineConfig.model_validate({**base.model_dump(), "preprocess": pre.model_dump()})
    manifests = [str(ws.site_manifest(s)) for s in ("north", "east")]
    items = [it for m in manifests for it in manifest_items(m)]
    assert not any(cache_file(it, pre, ws.cache).exists() for it in items)

    on_dask = preprocess_sites.with_options(task_runner=dask_runner(n_workers=2))
    records = on_dask(str(ws.root), cfg.model_dump(mode="json"), manifests)

    assert [r["case_id"] for r in records] == [it["case_id"] for it in items]
    workers = {r["worker"] for r in records}
    assert len(workers) == 2 and not any(w.endswith(f":{os.getpid()}") for w in workers), workers
    for record, item in zip(records, items):
        assert record["cache"] == str(cache_file(item, pre, ws.cache))
        cached = torch.load(record["cache"], weights_only=False)
        expected = Compose(preprocessing(pre, None))({"image": item["image"], "label": item["label"]})
        assert torch.allclose(torch.as_tensor(cached["image"]), torch.as_tensor(expected["image"]), atol=1e-5)
        assert cached["image"].shape[1:] == cached["label"].shape[1:]  # whole image, image and label aligned
