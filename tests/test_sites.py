import re
from pathlib import Path

import pytest

from tl_med.errors import ConfigError, InputError
from tl_med.sites import load_sites

REPO_SITES = Path(__file__).resolve().parent.parent / "data_manifests" / "sites.yaml"


def test_repo_registry_matches_the_demo_generator():
    from tl_med.data.synthetic import DEMO_SITES

    sites = load_sites(REPO_SITES, Path("/ws"))
    assert sites.names == [s.name for s in DEMO_SITES]
    assert sites.source.name == "north" and [t.name for t in sites.targets] == ["east", "west"]
    assert sites.get("east").dicom_dir == Path("/ws/incoming/east/dicom")


def test_unknown_site_lists_the_known_ones():
    sites = load_sites(REPO_SITES, Path("/ws"))
    with pytest.raises(InputError, match=r"unknown site 'south' \(known sites: north, east, west\)"):
        sites.get("south")


@pytest.mark.parametrize("body, field", [
    ("task: liver\nsites: []\n", "sites"),
    ("sites:\n  - {name: a, role: target, dicom_dir: x, labels_dir: y}\n", "sites"),
    ("sites:\n  - {name: 'bad name', role: source, dicom_dir: x, labels_dir: y}\n", "sites.0.name"),
    ("sites:\n  - {name: a, role: source, labels_dir: y}\n", "sites.0': Value error, site 'a': give either dicom_dir"),
])
def test_malformed_registry_names_the_field(tmp_path: Path, body: str, field: str):
    path = tmp_path / "sites.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(f"sites.yaml: field '{field}")):
        load_sites(path, tmp_path)
