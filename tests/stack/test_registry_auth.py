"""The champion rule enforced by a real ``mlflow server --app-name tlmed-auth``: accounts, REST, tl_med's
approval code and CLI, and the server's append-only audit log. No mocks."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from tl_med.cli import app
from tl_med.errors import TlMedError
from tl_med.stack.mlflow_server import ADMIN, grant_model_permission
from tests.stack.conftest import AuthServer, tl_med_cli

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


@contextlib.contextmanager
def account(server: AuthServer, user: str) -> Iterator[MlflowClient]:
    """An MlflowClient acting as ``user`` (MLflow reads the credentials from the environment per request)."""
    saved = {k: os.environ.get(k) for k in server.env(user)}
    os.environ.update(server.env(user))
    try:
        yield MlflowClient(server.url)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_model(server: AuthServer, name: str, versions: int = 2) -> list[str]:
    """As the pipeline: a run and ``versions`` versions of ``name`` (rising test Dice); dr_chen gets EDIT."""
    with account(server, "pipeline") as client:
        exp = client.get_experiment_by_name("tlmed") or client.get_experiment(client.create_experiment("tlmed"))
        run = client.create_run(exp.experiment_id).info.run_id
        client.create_registered_model(name)
        made = []
        for i in range(versions):
            tags = {"test_dice": f"{0.8 + i / 100:.2f}", "source_only_dice": "0.10", "negative_transfer": "false",
                    "manifest_sha256": "m1"}
            made.append(str(client.create_model_version(name, f"runs:/{run}/model", run_id=run, tags=tags).version))
    grant_model_permission(server.url, server.creds(ADMIN), name, "dr_chen", "EDIT")
    return made


def rest(server: AuthServer, user: str, method: str, path: str, body: dict) -> requests.Response:
    return requests.request(method, server.url + path, json=body, auth=server.creds(user), timeout=30)


def audit(server: AuthServer, user: str, name: str) -> list[dict]:
    resp = requests.get(f"{server.url}/api/2.0/mlflow/tlmed/alias-audit", params={"name": name},
                        auth=server.creds(user), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["events"]


def test_pipeline_sets_challenger_but_cannot_move_champion(auth_server):
    v1, _ = make_model(auth_server, "m-pipeline")
    with account(auth_server, "pipeline") as client:
        client.set_registered_model_alias("m-pipeline", "challenger", v1)
        with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
            client.set_registered_model_alias("m-pipeline", "champion", v1)
    body = {"name": "m-pipeline", "alias": "champion", "version": v1}
    assert rest(auth_server, "pipeline", "POST", ALIAS_PATH, {**body, "alias": "challenger"}).status_code == 200
    for path in (ALIAS_PATH, ALIAS_PATH.replace("/api/", "/ajax-api/")):  # the UI's route too
        assert rest(auth_server, "pipeline", "POST", path, body).status_code == 403
    assert rest(auth_server, "pipeline", "POST", ALIAS_PATH, {**body, "alias": "Champion"}).status_code == 403
    assert rest(auth_server, ADMIN, "POST", ALIAS_PATH, body).status_code == 403  # admins are not approvers
    with account(auth_server, "dr_chen") as client:
        assert client.get_registered_model("m-pipeline").aliases == {"challenger": v1}


def test_approver_moves_champion_and_the_pipeline_cannot_undo_it(auth_server):
    v1, v2 = make_model(auth_server, "m-approver")
    body = {"name": "m-approver", "alias": "champion", "version": v1}
    assert rest(auth_server, "dr_chen", "POST", ALIAS_PATH, body).status_code == 200
    assert rest(auth_server, "dr_chen", "POST", ALIAS_PATH, {**body, "version": v2}).status_code == 200
    # removing champion by any route is an approver's move too
    assert rest(auth_server, "pipeline", "DELETE", ALIAS_PATH, {"name": "m-approver", "alias": "champion"}).status_code == 403
    assert rest(auth_server, "pipeline", "DELETE", "/api/2.0/mlflow/model-versions/delete",
                {"name": "m-approver", "version": v2}).status_code == 403
    assert rest(auth_server, "pipeline", "DELETE", "/api/2.0/mlflow/registered-models/delete",
                {"name": "m-approver"}).status_code == 403
    with account(auth_server, "pipeline") as client:
        assert client.get_model_version_by_alias("m-approver", "champion").version == v2
    events = [(e["username"], e["action"], e["alias"], e["version"], e["previous_version"], e["outcome"])
              for e in audit(auth_server, "pipeline", "m-approver")]
    assert events == [("dr_chen", "set", "champion", v1, None, "ok"),
                      ("dr_chen", "set", "champion", v2, v1, "ok"),
                      ("pipeline", "delete", "champion", None, v2, "denied"),
                      ("pipeline", "delete-version", "champion", None, v2, "denied"),
                      ("pipeline", "delete-model", "champion", None, v2, "denied")]
    assert all(e["at"].endswith("Z") for e in audit(auth_server, "dr_chen", "m-approver"))


def test_tl_med_approve_as_pipeline_fails_with_one_clear_line(auth_server):
    v1, _ = make_model(auth_server, "m-library")
    with account(auth_server, "pipeline") as client, pytest.raises(TlMedError) as info:
        _approve(client, "m-library", v1)
    message = str(info.value)
    assert "\n" not in message and "only approvers may move the alias 'champion'" in message
    assert "pipeline" in message and auth_server.passwords["pipeline"] not in message
    with account(auth_server, "dr_chen") as client:
        assert "champion" not in client.get_registered_model("m-library").aliases
        assert "decision" not in client.get_model_version("m-library", v1).tags  # nothing half-done


def _approve(client: MlflowClient, name: str, version: str):
    """tl_med.approval.approve on a model not named tlmed-<task>-<site>: call through its parts."""
    import tl_med.approval as approval

    task, site = "liver", "x"
    original = approval.registered_model_name
    approval.registered_model_name = lambda *_: name  # type: ignore[assignment]
    try:
        return approval.approve(client, task, site, version, approver="Dr. A. Chen", reason="reviewed")
    finally:
        approval.registered_model_name = original  # type: ignore[assignment]


def test_cli_approve_and_history_against_the_server(auth_server, tmp_path):
    v1, v2 = make_model(auth_server, "tlmed-liver-east")
    ws = ["--workspace", str(tmp_path / "ws")]
    refused = tl_med_cli("approve", "--site", "east", "--version", v1, "--approver", "Pipeline Bot",
                         "--reason", "self-approval", *ws, env=auth_server.env("pipeline"))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: ") and len(refused.stderr.strip().splitlines()) == 1
    assert "Traceback" not in refused.stderr and "only approvers" in refused.stderr, refused.stderr
    in_process = CliRunner()  # the same commands in this process (no second import of the CLI: faster)
    done = in_process.invoke(app, ["approve", "--site", "east", "--version", v2, "--approver", "Dr. A. Chen",
                                   "--reason", "overlays reviewed", *ws], env=auth_server.env("dr_chen"))
    assert done.exit_code == 0, done.output
    for text in (refused.stdout + refused.stderr, done.output):
        assert not any(p in text for p in auth_server.passwords.values())
    hist = in_process.invoke(app, ["models", "--history", "--site", "east", "--json", *ws],
                             env=auth_server.env("pipeline"))
    assert hist.exit_code == 0, hist.output
    changes = json.loads(hist.stdout)["changes"]
    rows = [(c["alias"], c["action"], c["version"], c["who"], c["account"], c["source"]) for c in changes]
    assert ("champion", "denied", v1, "pipeline", "pipeline", "server") in rows
    assert ("champion", "set", v2, "Dr. A. Chen", "dr_chen", "tl_med+server") in rows
    approved = next(c for c in changes if c["action"] == "set" and c["alias"] == "champion")
    assert approved["reason"] == "overlays reviewed" and approved["previous"] == ""
    table = in_process.invoke(app, ["models", "--history", "--site", "east", *ws], env=auth_server.env("pipeline"))
    assert table.exit_code == 0 and "dr_chen" in table.stdout and "overlays reviewed" in table.stdout


def test_audit_log_is_append_only_and_secrets_stay_out_of_the_log(auth_server):
    make_model(auth_server, "m-audit", versions=1)
    assert rest(auth_server, "dr_chen", "POST", ALIAS_PATH, {"name": "m-audit", "alias": "champion",
                                                               "version": "1"}).status_code == 200
    engine = sa.create_engine(f"sqlite:///{auth_server.auth_db}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tlmed_alias_audit").scalar() >= 1
    for statement in ("UPDATE tlmed_alias_audit SET username = 'someone'", "DELETE FROM tlmed_alias_audit"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    engine.dispose()
    log = auth_server.log.read_text()
    assert not any(p in log for p in auth_server.passwords.values())


def test_graphql_has_no_mutation_that_moves_aliases():
    """If an MLflow upgrade adds one, tl_med.registry_auth must guard /graphql too."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    fields = schema.graphql_schema.mutation_type.fields
    assert not [f for f in fields if "alias" in f.lower() or "registered" in f.lower()]
