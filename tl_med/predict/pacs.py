"""Segment a site's new PACS studies with its approved model and store each SEG back with its study.

A study is *new* when it matches the site's PACS query, Orthanc calls it stable (no instance has
arrived for ``StableAge`` seconds) and the site's ledger (``<workspace>/inference/<site>.json``)
has no entry for it under the model being applied. Each new study is downloaded into a temporary
folder (deleted afterwards: identifiable images never stay in the workspace), every image series
in it is segmented (:func:`tl_med.predict.run.predict_inputs`), and each SEG is stored in the same
Orthanc (``POST /instances``), where it joins its study.

The ledger, the results and everything reported name a study only by its keyed hash
(``s`` + 12 hex characters of an HMAC of the StudyInstanceUID under the workspace's de-id key):
no UID, Orthanc id (a plain SHA-1 of the patient and study identifiers) or name. A study whose
series cannot be segmented (a reason ingest would give, another modality) is recorded with that
reason and not retried with the same model, and so is a study that fails in any other way (the
exception's type is recorded; one bad study never blocks the site's others). A PACS that cannot be
reached raises, so the study is tried again at the next run; a SEG stored twice replaces itself
(its UIDs derive from the source series and the model). SEGs tl_med stores are never ingested as
training labels (:mod:`tl_med.ingest.header` skips them).

Example:
    >>> # results = segment_new_studies(site, ws, predictor, model="tlmed-liver-east v3")
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tl_med.errors import InputError
from tl_med.ingest.deid import keyed_hash
from tl_med.inference import Predictor
from tl_med.pacs.orthanc import OrthancClient
from tl_med.predict.inputs import collect
from tl_med.predict.run import predict_inputs
from tl_med.progress import note, track
from tl_med.sites import SiteConfig
from tl_med.workspace import Workspace

__all__ = ["StudyResult", "segment_new_studies", "study_key", "Ledger"]

LEDGER_FORMAT = "tl_med.inference-ledger/1"


def study_key(key: bytes, study_uid: str) -> str:
    """The name a study goes by in ledgers, artifacts and logs: ``s`` + a keyed hash of its UID."""
    return "s" + keyed_hash(key, "study:" + study_uid)


@dataclass(frozen=True)
class StudyResult:
    """One study's outcome: series segmented, SEGs stored, volumes (ml) per series, problems."""

    study: str
    model: str
    series: int = 0
    segmented: int = 0
    stored: int = 0
    volumes_ml: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    at: str = ""


class Ledger:
    """Which studies of a site were segmented by which model (``inference/<site>.json``)."""

    def __init__(self, ws: Workspace, site: str) -> None:
        self.path = ws.root / "inference" / f"{site}.json"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())["studies"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.path}: not a readable inference ledger (move it away to start "
                                 "afresh: every study of the site would be segmented again)") from None

    def done(self, study: str, model: str) -> bool:
        return self.entries.get(study, {}).get("model") == model

    def record(self, result: StudyResult) -> None:
        self.entries[result.study] = asdict(result)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"schema": LEDGER_FORMAT, "studies": self.entries}, indent=1) + "\n")
        os.replace(tmp, self.path)


def _segment_study(client: OrthancClient, study_id: str, name: str, predictor: Predictor, model: str,
                   tmp: Path) -> StudyResult:
    folder, out = tmp / name, tmp / f"{name}-out"
    client.download_study(study_id, folder)
    outcomes = predict_inputs(predictor, collect([folder]), out, model=model)
    stored = 0
    for o in outcomes:
        if o.seg is not None:
            client.store(o.seg.read_bytes())
            stored += 1
    problems = [f"{o.name.removeprefix(name + '/')}: {o.reason}" if o.name != name else o.reason
                for o in outcomes if not o.ok]
    return StudyResult(study=name, model=model, series=len(outcomes), segmented=sum(o.ok for o in outcomes),
                       stored=stored, volumes_ml=[o.volumes_ml for o in outcomes if o.ok], problems=problems,
                       at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def segment_new_studies(site: SiteConfig, ws: Workspace, predictor: Predictor, *, model: str,
                        client: OrthancClient | None = None) -> list[StudyResult]:
    """Segment the site's stable PACS studies the ledger has no entry for under ``model``; store
    each SEG in the PACS. Returns one result per study segmented now."""
    if site.pacs is None:
        raise ValueError(f"site {site.name} has no PACS")
    key, ledger = ws.deid_key(), Ledger(ws, site.name)
    own = client is None
    client = client or OrthancClient.for_source(site.pacs)
    results: list[StudyResult] = []
    tmp = Path(tempfile.mkdtemp(prefix="tlmed-infer-"))
    try:
        new, waiting = [], 0
        for study_id in client.find_studies(site.pacs.query.orthanc()):
            name = study_key(key, client.study_uid(study_id))
            if ledger.done(name, model):
                continue
            if not client.is_stable(study_id):
                waiting += 1
                continue
            new.append((study_id, name))
        if waiting:
            note(f"{site.name}: {waiting} studies still arriving (not yet stable): next run")
        for study_id, name in track(new, f"infer:{site.name}", f"segment {site.name}'s new studies", unit="studies"):
            try:
                result = _segment_study(client, study_id, name, predictor, model, tmp)
            except InputError:
                raise  # the PACS is unreachable or refused us: the whole run is retried
            except Exception as exc:  # noqa: BLE001 - one bad study must not block the site's others
                result = StudyResult(study=name, model=model, problems=[f"failed ({type(exc).__name__})"],
                                     at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            finally:
                for leftover in (tmp / name, tmp / f"{name}-out"):  # identifiable images and SEGs
                    shutil.rmtree(leftover, ignore_errors=True)
            ledger.record(result)
            results.append(result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if own:
            client.close()
    return results
