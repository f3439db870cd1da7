"""The shift summary a reviewer sees: acquisition facts and intensities of source and target."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt

from tl_med.config import PipelineConfig
from tl_med.shift import shift_figure, shift_summary


def test_the_summary_shows_what_differs_between_two_sites(ingested):
    ws, _ = ingested
    cfg = PipelineConfig.profile("tiny")
    summary, samples = shift_summary(ws.site_manifest("north"), ws.site_manifest("east"), cfg.preprocess,
                                     ws.cache, max_images=2)
    json.dumps(summary)  # plain data, loggable as is
    source, target = summary["source"], summary["target"]
    assert source["modality"] == {"CT": source["cases"]} and target["images_sampled"] == 2
    assert source["scanner"] != target["scanner"] and source["spacing_mm"] != target["spacing_mm"]
    assert source["acquired_percentiles"][5] < source["acquired_percentiles"][95]  # inside the body, HU
    assert set(samples) == {"source", "target"} and all(len(s[1]) > 1000 for s in samples.values())
    same, _ = shift_summary(ws.site_manifest("north"), ws.site_manifest("north"), cfg.preprocess, ws.cache,
                            max_images=2)
    assert 0 <= same["intensity_w1"] < summary["intensity_w1"]
    fig = shift_figure(summary, samples)
    assert len(fig.axes) == 3 and "north → east" in fig._suptitle.get_text()
    plt.close(fig)
