"""The wheel the Dockerfile installs holds every file the service reads at run time, not only the Python modules.

The image runs from a wheel (no sources), so a template, static file, migration script or starter model that the
package data globs in pyproject.toml miss works in the repository and fails only in the container.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("service", "workers", "classifiers")


def _tracked_files(*paths: str) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--", *paths], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return [name for name in listed if (REPO / name).is_file()]


def test_wheel_holds_every_tracked_file_of_the_packages(tmp_path: Path) -> None:
    tracked = _tracked_files(*PACKAGES)
    assert any(name.endswith(".skops") for name in tracked)  # the check below sees the data files, not only code
    # Built from a copy of the tracked files, as the image's build stage does: a checkout's build/ directory (left
    # by earlier builds) would otherwise lend the wheel files that the globs no longer select.
    source = tmp_path / "src"
    for name in [*tracked, *_tracked_files("pyproject.toml", "README.md")]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("bouncer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
        entry_points = archive.read(next(n for n in packed if n.endswith(".dist-info/entry_points.txt"))).decode()

    assert [name for name in tracked if name not in packed] == []
    assert "bouncer = service.cli:main" in entry_points
