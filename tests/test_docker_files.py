"""The docker files cannot run here (no engine); check that they parse and say what the README says."""

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_compose_parses_and_names_the_promised_services():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert {"postgres", "prefect-server", "mlflow", "minio", "worker"} <= set(compose["services"])
    assert compose["services"]["worker"]["build"]["dockerfile"] == "docker/Dockerfile"
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), "services publish on loopback only"


def test_dockerfile_installs_cpu_torch_and_runs_unprivileged():
    text = (DOCKER / "Dockerfile").read_text()
    assert "FROM python:3.11" in text and "torch==2.13.0" in text and "whl/cpu" in text
    assert "USER tlmed" in text and 'ENTRYPOINT ["tl-med"]' in text
