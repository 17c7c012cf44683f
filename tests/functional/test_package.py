"""The package as PyPI would get it: `python -m build`, then `twine check --strict`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.functional import helpers

# What a checkout holds that a build must not see (a build writes its
# egg-info beside the sources, so it runs on a copy).
NOT_SOURCES = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "bench", "tests"
)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("package")
    source, out = root / "source", root / "dist"
    shutil.copytree(helpers.REPO, source, ignore=NOT_SOURCES)
    # Without --sdist/--wheel, build makes the sdist and then the wheel from
    # the unpacked sdist, so a file missing from the sdist breaks the wheel too.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_twine_check_strict_passes(dists):
    twine = [sys.executable, "-m", "twine", "check", "--strict"]
    done = subprocess.run(
        [*twine, str(dists["sdist"]), str(dists["wheel"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _sdist_files(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def test_sdist_carries_docs_examples_and_config(dists):
    files = _sdist_files(dists["sdist"])
    expected = {
        "LICENSE",
        "README.md",
        "doc/deployment.md",
        "doc/options.md",
        "examples/roundtrip.py",
        "examples/_common.py",
        "config/driver_zmq.conf",
        "etc/zmqdriver.conf.sample",
        "etc/oslo-config-generator/zmqdriver.conf",
    }
    assert expected <= files, sorted(expected - files)


def test_every_relative_link_of_the_readme_is_in_the_sdist(dists):
    readme = (Path(helpers.REPO) / "README.md").read_text()
    links = {
        target.split("#", 1)[0]
        for target in re.findall(r"\]\(([^)]+)\)", readme)
        if "://" not in target and not target.startswith("#")
    }
    assert links, "README.md links to no file: this test reads it wrongly"
    assert links <= _sdist_files(dists["sdist"]), sorted(links - _sdist_files(dists["sdist"]))


def test_wheel_metadata_names_the_license_and_ships_it(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        (metadata,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "Classifier: License ::" not in text
    assert "Project-URL: " in text
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    # The long description is the README, not empty.
    assert text.split("\n\n", 1)[1].startswith("# zmqdriver")
