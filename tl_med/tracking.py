"""MLflow adapter: explicit run ids through ``MlflowClient``, never the global active run.

Layout: one experiment per task (``tlmed-<task>``); a parent run per site adaptation with one
child run per strategy and baseline; the source pretraining is its own run. A site's model is
registered as ``tlmed-<task>-<site>``; a new site version takes the alias ``challenger`` unless
:func:`tl_med.challenger.challenger_decision` refuses it (:meth:`Tracker.register_candidate`).
Where unattended retraining starts (the source model's ``champion``) is :mod:`tl_med.retrain_start`.

Example:
    >>> # tracker = Tracker("sqlite:////abs/ws/mlflow.db", "tlmed-liver", artifact_root=ws.mlflow_artifacts)
    >>> # with tracker.run("pretrain-north", tags={"site": "north"}) as run_id:
    >>> #     tracker.log_metrics(run_id, {"loss": 0.3}, step=0)
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

import tl_med
from tl_med.challenger import challenger_decision
from tl_med.errors import TlMedError
from tl_med.mlflow_store import mlflow_client

__all__ = ["Tracker", "code_version", "registered_model_name", "CHALLENGER", "CHAMPION", "ALTERNATE", "experiment_tags",
           "ui_address", "VIEW_KEY", "Registration"]

CHALLENGER = "challenger"
ALTERNATE = "alternate"  # the source model's second version, pretrained with pretrain.alternate
CHAMPION = "champion"


@dataclass(frozen=True)
class Registration:
    """A registered site version: whether it took ``challenger`` and why (or why not)."""

    version: str
    challenger: bool
    reason: str


# The MLflow UI opens an experiment as training runs (not MLflow 3's GenAI overview) with this tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A saved runs-table view (MLflow's shared view state): the per-site figures as columns, opened by
# ``#/experiments/<id>/runs?viewStateShareKey=<VIEW_KEY>`` (``tl-med ui`` prints that address).
VIEW_KEY = "tlmed-sites"
VIEW_COLUMNS = ("attributes.`Dataset`", "tags.`site`", "tags.`strategy`", "params.`n_labelled`",
                "metrics.`adapted_dice`", "metrics.`source_only_dice`", "metrics.`scratch_dice`",
                "metrics.`test_dice`", "metrics.`test_hd95`", "metrics.`forgetting`", "tags.`negative_transfer`")


def experiment_tags() -> dict[str, str]:
    """The tags every tl_med experiment carries: its kind and the saved per-site view."""
    view = {"selectedColumns": list(VIEW_COLUMNS), "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {**EXPERIMENT_KIND, f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(view)}


def ui_address(base: str, experiment_id: str) -> str:
    """The MLflow UI address of an experiment's runs table in the saved per-site view.

    MLflow 3.17's UI decides between its GenAI and model-training layouts by a global toggle
    (``workflowType``, kept in the browser) that overrides the experiment's kind tag, so the
    address asks for the model-training layout explicitly.
    """
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def registered_model_name(task: str, site: str) -> str:
    return f"tlmed-{task}-{site}"


def code_version() -> str:
    """The git commit of the checkout (``+dirty`` when modified), else the package version."""
    root = Path(tl_med.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"tl_med-{tl_med.__version__}"


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore the previous global state.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI``; both are put back.
    """
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if before_env else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            mlflow.tracking._tracking_service.utils._tracking_uri = None  # back to "unset"
        else:
            mlflow.set_tracking_uri(before)


class Tracker:
    """Runs, metrics, artifacts, datasets and registry for one experiment."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.client = mlflow_client(tracking_uri)
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        """The experiment's id, created on first use (artifacts under ``artifact_root`` if given)."""
        if self._experiment_id is None:
            try:
                exp = self.client.get_experiment_by_name(self.experiment)
            except MlflowException as exc:
                raise TlMedError(f"MLflow tracking server {self.tracking_uri} is not usable: "
                                 f"{str(exc).splitlines()[0][:160]}") from None
            if exp is None:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location,
                                                                    tags=experiment_tags())
            else:
                self._experiment_id = exp.experiment_id
                for key, value in experiment_tags().items():
                    if exp.tags.get(key) != value:
                        self.client.set_experiment_tag(exp.experiment_id, key, value)
        return self._experiment_id

    @contextmanager
    def run(self, name: str, *, tags: dict[str, str] | None = None,
            parent_run_id: str | None = None) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED (and re-raises) when the body raises. Against a tracking
        server with an account (``MLFLOW_TRACKING_USERNAME``), the run's user is that account."""
        all_tags = dict(tags or {})
        if os.environ.get("MLFLOW_TRACKING_USERNAME") and not self.tracking_uri.startswith("sqlite:"):
            all_tags.setdefault("mlflow.user", os.environ["MLFLOW_TRACKING_USERNAME"])
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and np.isfinite(v)]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_figure(self, run_id: str, figure: Any, path: str) -> None:
        self.client.log_figure(run_id, figure, path)

    def log_dataset(self, run_id: str, manifest_path: Path, digest: str, context: str) -> None:
        """Record one split of a manifest as a run input (lineage in the UI's Datasets column).

        Each split is its own dataset (``<site>-<context>``, digest from the manifest hash and the
        split), since MLflow keeps a dataset only once per run.
        """
        import hashlib

        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        split_digest = hashlib.sha256(f"{digest}:{context}".encode()).hexdigest()[:36]
        ds = MetaDataset(source=LocalArtifactDatasetSource(str(manifest_path)),
                         name=f"{manifest_path.stem}-{context}", digest=split_digest)
        self.client.log_inputs(run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                              tags=[InputTag("mlflow.data.context", context)])])

    def log_state_dict(self, run_id: str, model: torch.nn.Module, path: str = "weights") -> str:
        """Log the weights (state dict) so the pipeline can rebuild and adapt the network."""
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.pytorch.save_state_dict(model.state_dict(), tmp)
            self.client.log_artifacts(run_id, tmp, path)
        return f"runs:/{run_id}/{path}"

    def load_state_dict(self, uri: str) -> dict[str, torch.Tensor]:
        """Weights logged by :meth:`log_state_dict` (``runs:/<id>/weights``), loaded weights-only."""
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp,
                                                        tracking_uri=self.tracking_uri)
            return torch.load(Path(local) / "state_dict.pth", map_location="cpu", weights_only=True)

    def log_package(self, run_id: str, model: torch.nn.Module, spec: Any) -> str:
        """Log the self-contained model package (spec + weights; :mod:`tl_med.models.spec`) as
        the artifact folder ``package/``; returns its ``runs:/`` URI."""
        from tl_med.models.spec import save_package

        with tempfile.TemporaryDirectory() as tmp:
            save_package(Path(tmp), model, spec)
            self.client.log_artifacts(run_id, tmp, "package")
        return f"runs:/{run_id}/package"

    def download(self, uri: str, dst: Path) -> Path:
        """Download an artifact folder (``runs:/<id>/<path>``) into ``dst``; the local folder."""
        dst.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                        tracking_uri=self.tracking_uri))

    def log_model(self, run_id: str, model: torch.nn.Module, input_example: np.ndarray) -> str:
        """Log the network for inference (pt2 format, signature from ``input_example``)."""
        with _fluent_uri(self.tracking_uri), mlflow.start_run(run_id=run_id, nested=True):
            info = mlflow.pytorch.log_model(
                model.eval().cpu(), name="model", input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "monai"],
            )
        return info.model_uri

    def register(self, model_uri: str, name: str, run_id: str, *, tags: dict[str, Any],
                 description: str, alias: str = CHALLENGER) -> str:
        """A new version of ``name`` with ``tags`` that always takes ``alias`` (the source model's
        registration); removed again if any step fails."""
        self._ensure_model(name)
        previous = self._alias_version(name, alias)
        if previous:  # so that discarding this version (a failed flow) can hand the alias back
            tags = {**tags, f"previous_{alias}": previous}
        version = self._create_version(model_uri, name, run_id, tags, description)
        self._set_alias(name, alias, version)
        return version

    def register_candidate(self, model_uri: str, name: str, run_id: str, *, tags: dict[str, Any],
                           description: str) -> Registration:
        """A new site version that takes ``challenger`` only when
        :func:`~tl_med.challenger.challenger_decision` allows it (tag ``challenger_reason``); a
        refused version is still registered, tagged ``candidate=true`` and ``challenger_refused``,
        and the current challenger keeps the alias."""
        self._ensure_model(name)
        try:
            current = self.client.get_model_version_by_alias(name, CHALLENGER)
        except MlflowException:
            current = None
        tags = {k: str(v) for k, v in tags.items()}
        takes, reason = challenger_decision(tags, None if current is None else
                                            (str(current.version), current.tags or {}))
        if takes:
            tags.update({"challenger_reason": reason,
                         **({f"previous_{CHALLENGER}": str(current.version)} if current is not None else {})})
            description += f" Took {CHALLENGER}: {reason}."
        else:
            tags.update({"candidate": "true", "challenger_refused": reason})
            description += f" Did not take {CHALLENGER}: {reason}."
        version = self._create_version(model_uri, name, run_id, tags, description)
        if takes:
            self._set_alias(name, CHALLENGER, version)
        return Registration(version, takes, reason)

    def _ensure_model(self, name: str) -> None:
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=f"tl_med site model ({name})")

    def _create_version(self, model_uri: str, name: str, run_id: str, tags: dict[str, Any],
                        description: str) -> str:
        with _fluent_uri(self.tracking_uri):  # MLflow resolves models:/m-… sources via the global URI
            # a logged model's URI (models:/m-…) must name its model id, or a tracking server refuses it
            model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
            version = self.client.create_model_version(name, model_uri, run_id=run_id,
                                                       tags={k: str(v) for k, v in tags.items()},
                                                       description=description, model_id=model_id)
        return str(version.version)

    def _set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``; the version is deleted again when that fails."""
        try:
            self.client.set_registered_model_alias(name, alias, version)
        except BaseException:
            self.client.delete_model_version(name, version)
            raise

    def _alias_version(self, name: str, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def discard_flow_run(self, flow_run_id: str) -> tuple[list[str], list[str]]:
        """Undo what a failed or crashed flow run left behind: delete the model versions its runs
        registered (handing ``challenger`` and ``alternate`` back to the versions that held them
        before) and mark its unfinished runs FAILED. Returns (deleted ``name/version``, runs marked
        failed)."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        if not flow_run_id or experiment is None:
            return [], []
        runs = self.client.search_runs([experiment.experiment_id], f"tags.prefect_flow_run_id = '{flow_run_id}'",
                                       max_results=1000)
        deleted, failed = [], []
        for run in runs:
            for mv in self.client.search_model_versions(f"run_id = '{run.info.run_id}'"):
                for alias in (CHALLENGER, ALTERNATE):
                    if self._alias_version(mv.name, alias) == str(mv.version):
                        previous = mv.tags.get(f"previous_{alias}")
                        if previous:
                            self.client.set_registered_model_alias(mv.name, alias, previous)
                self.client.delete_model_version(mv.name, mv.version)
                deleted.append(f"{mv.name}/{mv.version}")
            if run.info.status in ("RUNNING", "SCHEDULED"):
                self.client.set_terminated(run.info.run_id, status="FAILED")
                failed.append(run.info.run_id)
        return deleted, failed

    def log_json(self, run_id: str, data: Any, path: str) -> None:
        self.client.log_text(run_id, json.dumps(data, indent=2, default=str), path)
