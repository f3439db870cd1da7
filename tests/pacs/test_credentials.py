"""PACS credentials come from the environment or a secrets file, never from sites.yaml; each
mistake is one line that names the URL and the variable or file, never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from tl_med.errors import ConfigError, InputError
from tl_med.pacs.orthanc import credentials
from tl_med.sites import PacsSource, load_sites


def test_credentials_from_a_secrets_file(tmp_path):
    secret = tmp_path / "pacs-east"
    secret.write_text("reader:QXFILEPASSWORD\n")
    assert credentials(PacsSource(url="http://pacs:8042", credentials_file=secret)) == ("reader", "QXFILEPASSWORD")
    secret.write_text("no-colon-here\n")
    with pytest.raises(InputError, match=r"must hold one line 'user:password'") as err:
        credentials(PacsSource(url="http://pacs:8042", credentials_file=secret))
    assert "no-colon-here" not in str(err.value)
    with pytest.raises(InputError, match=r"PACS http://pacs:8042: credentials file .*missing not found"):
        credentials(PacsSource(url="http://pacs:8042", credentials_file=tmp_path / "missing"))


def test_credentials_from_the_environment(monkeypatch):
    source = PacsSource(url="http://pacs:8042", username_env="PACS_U", password_env="PACS_P")
    monkeypatch.setenv("PACS_U", "reader")
    with pytest.raises(InputError, match=r"credential environment variable\(s\) PACS_P not set"):
        credentials(source)
    monkeypatch.setenv("PACS_P", "QXENVPASSWORD")
    assert credentials(source) == ("reader", "QXENVPASSWORD")
    assert credentials(PacsSource(url="http://pacs:8042")) is None  # an open PACS


@pytest.mark.parametrize("pacs, field", [
    ("{url: 'ftp://pacs'}", "sites.1.pacs.url"),
    ("{url: 'http://pacs:8042', username_env: U}", "sites.1.pacs"),
    ("{url: 'http://pacs:8042', query: {study_date: 'last week'}}", "sites.1.pacs.query.study_date"),
])
def test_a_malformed_pacs_block_names_its_field(tmp_path, pacs, field):
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {name: north, role: source, dicom_dir: a, labels_dir: b}\n"
                    f"  - {{name: east, dicom_dir: c, labels_dir: d, pacs: {pacs}}}\n")
    with pytest.raises(ConfigError, match=f"field '{field}"):
        load_sites(path, Path("/ws"))


def test_a_secrets_file_path_is_relative_to_the_workspace(tmp_path):
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  - {name: north, role: source, dicom_dir: a, labels_dir: b}\n"
                    "  - {name: east, dicom_dir: c, labels_dir: d, pacs: {url: 'http://pacs', "
                    "credentials_file: secrets/pacs-east}}\n")
    assert load_sites(path, Path("/ws")).get("east").pacs.credentials_file == Path("/ws/secrets/pacs-east")
