"""Which model to apply: a package folder, a registered version, or a site's ``champion``.

Resolution needs only an MLflow tracking URI (or a local package folder): no ``sites.yaml`` and
no workspace. A registered version points at the run that produced it; its ``package/`` artifact
(:mod:`tl_med.models.spec`) is downloaded into a temporary folder and loaded from there.

Example:
    >>> # folder, label = resolve_model(None, site="east", task="liver", tracker=tracker, dst=tmp)
"""

from __future__ import annotations

from pathlib import Path

from mlflow.exceptions import MlflowException

from tl_med.errors import InputError
from tl_med.models.spec import SPEC_FILE
from tl_med.tracking import CHAMPION, Tracker, registered_model_name

__all__ = ["resolve_model", "resolve_version", "download_version", "site_task"]


def site_task(tracker: Tracker, site: str) -> str:
    """The task of the one registered model named ``tlmed-<task>-<site>``."""
    try:
        found = tracker.client.search_registered_models(filter_string=f"name LIKE 'tlmed-%-{site}'")
    except MlflowException as exc:
        raise InputError(f"MLflow at {tracker.tracking_uri}: {str(exc).splitlines()[0][:160]}") from None
    names = sorted(m.name for m in found if m.name.endswith(f"-{site}"))
    if len(names) != 1:
        raise InputError(f"site '{site}': {'no registered model' if not names else 'several registered models: ' + ', '.join(names)}"
                         " (give --task or --model)")
    return names[0].removeprefix("tlmed-").removesuffix(f"-{site}")


def _versions_line(tracker: Tracker, name: str) -> str:
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    model = tracker.client.get_registered_model(name)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    parts = [f"v{v.version}" + (f" ({', '.join(aliases[str(v.version)])})" if str(v.version) in aliases else "")
             + (f" test Dice {v.tags['test_dice']}" if "test_dice" in v.tags else "")
             for v in sorted(versions, key=lambda v: int(v.version))]
    return "; ".join(parts) or "none"


def _registered(tracker: Tracker, uri: str):
    ref = uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            return tracker.client.get_model_version_by_alias(name, alias)
        name, number = ref.rsplit("/", 1)
        return tracker.client.get_model_version(name, number)
    except (MlflowException, ValueError):
        raise InputError(f"model {uri}: no such registered version") from None


def resolve_version(model: str | None, *, site: str, task: str, tracker: Tracker):
    """The registered version ``model`` (a ``models:/`` URI) names, or the site's champion."""
    name = registered_model_name(task, site)
    if model is not None:
        if not model.startswith("models:/"):
            raise InputError(f"model {model}: give a models:/ URI, a runs:/ URI or a model package folder")
        return _registered(tracker, model)
    try:
        return tracker.client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        try:
            listing = _versions_line(tracker, name)
        except MlflowException:
            raise InputError(f"site '{site}': no registered model '{name}' (run the pipeline first)") from None
        raise InputError(f"{name} has no champion: approve a version first (tl-med approve); versions: "
                         f"{listing}") from None


def download_version(version, *, tracker: Tracker, dst: Path) -> Path:
    """The ``package/`` artifact of a registered version, downloaded into ``dst``."""
    try:
        return tracker.download(f"runs:/{version.run_id}/package", dst)
    except Exception:  # noqa: BLE001 - a version logged before packages existed
        raise InputError(f"{version.name} v{version.version} has no model package (logged by an older tl_med: "
                         "retrain the site)") from None


def resolve_model(model: str | None, *, site: str, task: str, tracker: Tracker, dst: Path) -> tuple[Path, str]:
    """(package folder, a readable name of the model) for ``--model`` (default: the site's champion)."""
    if model and Path(model).is_dir():
        if not (Path(model) / SPEC_FILE).is_file():
            raise InputError(f"model {model}: a folder without {SPEC_FILE} (not a tl_med model package)")
        return Path(model), Path(model).name
    if model and model.startswith("runs:/"):
        uri = model.rstrip("/")
        try:
            return tracker.download(uri if uri.endswith("/package") else f"{uri}/package", dst), model
        except Exception:  # noqa: BLE001 - no such run, or a run without a package
            raise InputError(f"model {model}: no model package there (runs:/<run id> of a tl_med run)") from None
    version = resolve_version(model, site=site, task=task, tracker=tracker)
    return download_version(version, tracker=tracker, dst=dst), f"{version.name} v{version.version}"
