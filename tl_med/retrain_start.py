"""Where a retrain starts: the given weights, else the source site's approved model.

Unattended retraining (``site-retrain``, schedules, new data) starts from the source model's
``champion``, resolved when the run starts and pinned to its version; from its ``challenger`` only
when the source model was never approved, and then it says so (tag ``pretrained_fallback``). A
source model whose champion was approved once and later removed is refused: an unapproved model is
never used silently.

Example:
    >>> # start, tags, line = pretrained_start(tracker, "liver", "north", given=None)
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tl_med.approval import recorded_decisions
from tl_med.errors import InputError
from tl_med.tracking import CHALLENGER, CHAMPION, Tracker, registered_model_name

__all__ = ["SourceStart", "approved_source", "pretrained_start"]


@dataclass(frozen=True)
class SourceStart:
    """Where unattended retraining starts: a pinned ``models:/<name>/<version>`` URI, the alias it
    was resolved from, and the fallback line ('' when the approved ``champion`` was used)."""

    uri: str
    name: str
    version: str
    alias: str
    fallback: str = ""

    def tags(self) -> dict[str, str]:
        """The MLflow run tags that record the resolution."""
        return {"pretrained_model": self.name, "pretrained_version": self.version, "pretrained_alias": self.alias,
                **({"pretrained_fallback": self.fallback} if self.fallback else {})}


def _ever_approved(client: MlflowClient, name: str) -> list[str]:
    """Versions a person approved as champion (:func:`tl_med.approval.recorded_decisions`)."""
    return [str(d.get("version", "")) for _, d in recorded_decisions(client.get_registered_model(name).tags)
            if d.get("decision") == "approved"]


def approved_source(client: MlflowClient, name: str) -> SourceStart:
    """The source model version unattended retraining starts from, resolved now.

    Its ``champion``; only when ``name`` has never had an approved champion, its ``challenger``
    (with a fallback line to record and show). A model that had a champion but has none now, or no
    version at all, raises :class:`InputError`: an unapproved model is never used silently.
    """
    def by_alias(alias: str):
        try:
            return client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise InputError(f"no source model '{name}' is registered: run the pipeline (tl-med run) first, "
                         "or give a pretrained source (--pretrained, or retrain.pretrained in sites.yaml)") from None
    if (champion := by_alias(CHAMPION)) is not None:
        return SourceStart(f"models:/{name}/{champion.version}", name, str(champion.version), CHAMPION)
    if approved := _ever_approved(client, name):
        raise InputError(f"source model '{name}' has no champion now, but v{approved[-1]} was approved before: "
                         "not falling back to the unapproved challenger; approve a version "
                         "(tl-med approve) or give a pretrained source")
    if (challenger := by_alias(CHALLENGER)) is None:
        raise InputError(f"source model '{name}' has neither a champion nor a challenger: run the pipeline "
                         "(tl-med run) first, or give a pretrained source")
    return SourceStart(f"models:/{name}/{challenger.version}", name, str(challenger.version), CHALLENGER,
                       f"no approved source model (champion) of {name}; started from challenger "
                       f"v{challenger.version}")


def pretrained_start(tracker: Tracker, task: str, source: str,
                     given: str | None) -> tuple[str, dict[str, str], str]:
    """Where a retrain starts: (source, MLflow run tags, status line).

    ``given`` (the run's ``pretrained`` or the site's ``retrain.pretrained``) is used as it is.
    Otherwise the ``source`` site's model's ``champion`` is resolved now and pinned to its version; its
    ``challenger`` only when it never had a champion (tag ``pretrained_fallback``).
    """
    if given:
        return given, {}, f"starting from {given}"
    chosen = approved_source(tracker.client, registered_model_name(task, source))
    line = chosen.fallback or f"starting from the approved source model {chosen.name} v{chosen.version} (champion)"
    return chosen.uri, chosen.tags(), line
