"""The MLflow UI as a reviewer sees it: a real `mlflow server` on loopback, a tiny pipeline logged
to it over HTTP, and headless Chromium checking that runs, the registered model and its aliases
render. Screenshots are saved under ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'db.sqlite'}", "--artifacts-destination", str(tmp_path / "art"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{uri}/health", timeout=2).read() == b"OK":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def _browser():
    if not (CHROMIUM and DRIVER):
        message = "chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=2600,1000"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(DRIVER), options=options)  # no driver download


def _shows(driver, url: str, words: list[str], shot: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    try:
        WebDriverWait(driver, 45).until(lambda d: all(w in d.page_source for w in words))
    except Exception:
        print("PAGE TEXT:", driver.find_element("tag name", "body").text[:3000])
        raise
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / shot))
    assert all(w in driver.page_source for w in words)


def test_reviewer_sees_runs_model_and_aliases_in_the_mlflow_ui(mlflow_server, ingested, tiny_cfg):
    from mlflow import MlflowClient

    from tl_med.stages import StageContext, adapt_site, pretrain_source
    from tl_med.tracking import Tracker, ui_address

    ws, _ = ingested
    tracker = Tracker(mlflow_server, "tlmed-liver")  # over HTTP; artifacts proxied by the server
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker, trigger="manual")
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained="models:/tlmed-liver-north@challenger",
                     source_manifest=ws.site_manifest("north"))
    client = MlflowClient(mlflow_server)
    assert str(client.get_model_version_by_alias("tlmed-liver-east", "challenger").version) == res.model_version
    driver = _browser()
    try:
        # the experiment in the model-training layout lands on its training runs, not the GenAI overview
        assert client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        _shows(driver, f"{mlflow_server}/#/experiments/{tracker.experiment_id}?workflowType=machine_learning",
               ["pretrain-north", "adapt-east"], "mlflow-ui-experiment.png")
        # the saved per-site view: the Dice figures are columns, with no column picking
        adapted = f"{client.get_run(res.parent_run_id).data.metrics['adapted_dice']:.3f}"[:4]
        _shows(driver, ui_address(mlflow_server, tracker.experiment_id),
               ["adapt-east", "adapted_dice", "source_only_dice", adapted], "mlflow-ui-site-view.png")
        _shows(driver, f"{mlflow_server}/#/models/tlmed-liver-east", ["tlmed-liver-east", "challenger"],
               "mlflow-ui-model.png")
        _shows(driver, f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs/{src.run_id}",
               ["pretrain-north", "test_dice"], "mlflow-ui-run.png")
    finally:
        driver.quit()
