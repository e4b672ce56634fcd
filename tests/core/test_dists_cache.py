"""The scan of installed distributions (for dependency fingerprints) is kept per Python environment, in
the user's cache directory: a new ``ISTHMUS_HOME`` or a new working directory reuses it, an install
scans again, and a damaged file is never trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isthmus.fingerprint import deps

REPO = Path(__file__).resolve().parents[2]
PROBE = "from isthmus.fingerprint import deps; import json; print(json.dumps(deps.installed_versions()))"


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    deps._distributions.cache_clear()
    yield cache
    deps._distributions.cache_clear()


def _versions(home: Path, cwd: Path, xdg: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(home),
        "XDG_CACHE_HOME": str(xdg),
        "PYTHONPATH": str(REPO / "common"),
    }
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_fresh_homes_and_directories_in_fresh_processes_share_one_scan(tmp_path: Path, xdg: Path) -> None:
    first = _versions(tmp_path / "home1", tmp_path, xdg)
    assert "blake3" in first
    (files,) = list((xdg / "isthmus").glob("dists-*.json"))
    data = json.loads(files.read_text())
    data["versions"]["zz-marker"] = "1"  # a scan would not find it: seeing it proves the file was reused
    files.write_text(json.dumps(data))
    work = tmp_path / "another-dir"
    work.mkdir()
    (work / "notes.txt").write_text("a file written in the working directory")
    again = _versions(tmp_path / "home2", work, xdg)
    assert again.get("zz-marker") == "1"
    assert not (tmp_path / "home2" / "cache").exists()


@pytest.mark.parametrize("damage", ["[]", '{"versions": {"x": 1}, "top_level": {}}', "{not json", ""])
def test_a_damaged_scan_is_scanned_again(tmp_path: Path, xdg: Path, damage: str) -> None:
    folder = xdg / "isthmus"
    folder.mkdir(parents=True)
    (folder / f"dists-{deps._path_signature()}.json").write_text(damage)
    versions = deps.installed_versions()
    assert "blake3" in versions and all(isinstance(v, str) for v in versions.values())


def test_an_install_on_the_path_is_seen(tmp_path: Path, xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "extra-site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = deps._path_signature()
    (site / "plain.txt").write_text("no distribution here")
    assert deps._path_signature() == before  # a directory without distributions: only that it has none
    assert "isthmus-probe-dist" not in deps.installed_versions()
    info = site / "isthmus_probe_dist-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: isthmus-probe-dist\nVersion: 1.2.3\n")
    assert deps._path_signature() != before
    deps._distributions.cache_clear()
    assert deps.installed_versions()["isthmus-probe-dist"] == "1.2.3"


def test_an_unwritable_user_cache_falls_back_to_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isthmus_home: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    deps._distributions.cache_clear()
    try:
        assert "blake3" in deps.installed_versions()
        assert list((isthmus_home / "cache").glob("dists-*.json"))
    finally:
        deps._distributions.cache_clear()
