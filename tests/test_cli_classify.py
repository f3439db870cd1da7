"""``tl-med classify`` from a fresh workspace: ingest, train, the table or one JSON document."""

import json

from tests.test_cli import tl_med


def test_classify_reports_auc_with_its_interval_for_the_model_and_its_baselines(workspace):
    ws, sites_file = workspace
    base = ("--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny")
    proc = tl_med("classify", "--site", "east", *base, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["command"] == "classify" and doc["site"] == "east" and doc["classes"] == ["normal", "enlarged"]
    assert set(doc["metrics"]) == {"source_only", "source_adabn", "from_scratch", "adapted"}
    for m in doc["metrics"].values():
        assert {"auc", "auc_low", "auc_high", "balanced_accuracy", "ece", "n_cases"} <= set(m)
    assert "ingest north" in proc.stderr and "train classify-finetune" in proc.stderr  # progress on stderr
    table = tl_med("classify", "--site", "east", *base, "--strategy", "feature_extraction", "--labels", "2")
    assert table.returncode == 0, table.stderr[-2000:]
    assert "adapted: feature_extraction from north's classifier; 2 labelled cases, 2 test cases" in table.stdout
    assert "source + AdaBN (0 labels)" in table.stdout and "95% CI" in table.stdout


def test_classify_mistakes_are_one_line(workspace):
    ws, sites_file = workspace
    base = ("--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny")
    for args, message in ((("--site", "north"), "error: site 'north' is the source site; pick a target site (east)"),
                          (("--site", "east", "--network", "VGG"), "error: --network VGG: unknown classifier"),
                          (("--site", "east", "--strategy", "multitask"), "multitask is a segmentation strategy")):
        proc = tl_med("classify", *args, *base)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr
