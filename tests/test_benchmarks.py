"""The adaptation benchmarks run on any site registry, so a hospital can measure on its own sites."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ("--seeds", "1", "--pretrain-epochs", "1", "--epochs", "1", "--epoch-cases", "2", "--spacing", "12",
        "--patch", "16")


def _bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.e2e
def test_zero_label_benchmark_measures_the_sites_of_a_sites_file(workspace, tmp_path):
    ws, sites_file = workspace  # a DICOM source and target, paths relative to the workspace
    proc = _bench("zero_label.py", "--sites-file", str(sites_file), "--sites-root", str(ws.root),
                  "--workspace", str(tmp_path / "bench"), "--recipes", "none,self_training,mean_teacher@contrast",
                  "--pretrain-augment", "intensity", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "source model (intensity augmentation): test Dice" in proc.stdout and "at north" in proc.stdout
    (summary_path,) = (tmp_path / "bench" / "zero-label").glob("*/summary.json")  # one folder per run
    summary = json.loads(summary_path.read_text())
    assert set(summary["east"]) >= {"oracle_dice", "source_only_dice", "intensity/none", "intensity/self_training",
                                    "intensity/mean_teacher@contrast"}
    assert 0 <= summary["east"]["intensity/self_training"]["dice"] <= 1
    assert 0 <= summary["east"]["intensity/mean_teacher@contrast"]["dice"] <= 1

    # the registered source, measured again without pretraining (as a site measures its champion);
    # two sources side by side, and the one each site would keep on its validation Dice
    source = "models:/tlmed-liver-north/1"
    proc = _bench("label_efficiency.py", "--sites-file", str(sites_file), "--sites-root", str(ws.root),
                  "--workspace", str(tmp_path / "bench"), "--source", f"{source},{source}",
                  "--ks", "0,1", "--methods", "scratch,finetune", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"source model: {source} (intensity augmentation), not retrained" in proc.stdout
    assert "test Dice" not in proc.stdout.split("source model:")[0]  # nothing was pretrained
    (csv_path,) = (tmp_path / "bench" / "label-efficiency").glob("*/label_efficiency.csv")
    header, *rows = csv_path.read_text().splitlines()
    assert "val_dice" in header.split(",")
    methods = {tuple(r.split(",")[1:3]) for r in rows}
    assert {("finetune/intensity", "1"), ("finetune/intensity-2", "1"), ("finetune/by-val", "1"),
            ("source_only/intensity", "0"), ("source_only/intensity-2", "0")} <= methods
    chosen = next(r for r in rows if ",finetune/by-val," in r)
    assert chosen.split(",")[4] == next(r for r in rows if ",finetune/intensity,1," in r).split(",")[4]  # a tie: the first


def test_benchmark_refuses_an_unknown_site_or_file_in_one_line(workspace, tmp_path):
    ws, sites_file = workspace
    proc = _bench("label_efficiency.py", "--sites-file", str(sites_file), "--sites-root", str(ws.root),
                  "--sites", "west", "--workspace", str(tmp_path / "bench"))
    assert proc.returncode != 0 and proc.stderr.strip() == "error: unknown target site(s) west (known: east)"
    proc = _bench("zero_label.py", "--recipes", "none,mean_teacher@sepia")
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: unknown augmentation(s) in --recipes or --pretrain-augment: sepia (known: none, intensity, contrast)"]
    proc = _bench("label_efficiency.py", "--sites-file", str(sites_file), "--sites-root", str(ws.root),
                  "--workspace", str(tmp_path / "bench"), "--source", "models:/tlmed-liver-north/9")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: --source: pretrained source models:/tlmed-liver-north/9")
    proc = _bench("label_efficiency.py", "--sites-file", str(tmp_path / "missing.yaml"))
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        f"error: --sites-file {tmp_path / 'missing.yaml'} does not exist"]


@pytest.mark.e2e
@pytest.mark.skipif(importlib.util.find_spec("nvflare") is None, reason="nvflare is not installed (federated extra)")
def test_federated_benchmark_prints_the_three_way_comparison_before_and_after_adaptation(tmp_path):
    proc = _bench("federated.py", "--workspace", str(tmp_path / "bench"), "--seeds", "0", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["federated"] for line in lines) and "from federated" in proc.stdout
    (run,) = json.loads((tmp_path / "bench" / "federated-bench.json").read_text())
    assert set(run["models"]) == {"source-only", "federated", "pooled"} and run["bytes_per_round"] > 0
    for row in run["models"].values():
        assert set(row["before"]) == {"north", "east"} and set(row["after"]) == set(row["scratch"]) == {"east"}
        assert all(0 <= d <= 1 for d in [*row["before"].values(), *row["after"].values()])
