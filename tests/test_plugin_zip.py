"""The `make plugin` zip: what QGIS's "Install from ZIP" needs, and nothing it must not carry."""

from __future__ import annotations

import configparser
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(repo_root / "scripts" / "build_plugin.py"), "--out", str(out)],
                          check=True, capture_output=True, text=True)
    return Path(done.stdout.strip())


def test_zip_has_one_top_level_plugin_folder(plugin_zip: Path) -> None:
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert {name.split("/")[0] for name in names} == {"qgis_unravel"}
    for required in ("metadata.txt", "__init__.py", "paths.py", "worker/protocol.py"):
        assert f"qgis_unravel/{required}" in names


def test_zip_carries_the_demo_weights_and_no_caches_or_other_weights(plugin_zip: Path) -> None:
    archive = zipfile.ZipFile(plugin_zip)
    names = archive.namelist()
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pt"))]
    weights = [n for n in names if n.endswith(".pth")]
    assert weights == ["qgis_unravel/models/demo-unravelnet-synthetic.pth"]  # offline first run
    card = json.loads(archive.read("qgis_unravel/models/demo-unravelnet-synthetic.json"))
    digest = hashlib.sha256(archive.read(weights[0])).hexdigest()
    assert card["weights"]["availability"] == "bundled" and digest == card["weights"]["sha256"]
    assert plugin_zip.stat().st_size < 25_000_000  # plugins.qgis.org refuses larger uploads


def test_zip_metadata_is_complete_and_versioned(plugin_zip: Path) -> None:
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(plugin_zip).read("qgis_unravel/metadata.txt").decode("utf-8"))
    general = parser["general"]
    for key in ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about", "version",
                "author", "email", "repository", "tracker", "homepage", "tags", "category", "icon",
                "experimental", "hasProcessingProvider", "license"):
        assert general.get(key), f"metadata.txt lacks {key}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert "torch" in general["about"].lower()
    assert plugin_zip.name == f"qgis_unravel-{general['version']}.zip"


def test_engine_package_imports_without_qgis(repo_root: Path) -> None:
    """The engine must never pull QGIS in: import it with qgis made unimportable."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'qgis' or name.startswith('qgis.'):\n"
        "            raise ImportError('qgis blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import qgis_unravel, qgis_unravel.worker.protocol, qgis_unravel.paths\n"
        "import importlib, pkgutil\n"
        "for sub in ('ops', 'detector', 'engine', 'zoo', 'training'):\n"
        "    importlib.import_module('qgis_unravel.' + sub)\n"
        "assert not [m for m in sys.modules if m == 'qgis' or m.startswith('qgis.')]\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
