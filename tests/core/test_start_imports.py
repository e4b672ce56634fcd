"""What a job pays before its first step: ``import isthmus`` and one step run on the default local store
load neither pydantic (the resource model) nor fsspec (remote artifact stores) — each costs tens of
milliseconds at every process start — and still behave the same when they are used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import isthmus
from isthmus.artifacts.store import ArtifactStore
from isthmus.errors import StepDefinitionError
from isthmus.resources import Resources

SCRIPT = """
import json, sys
from isthmus import pipeline, step

def inc_fn(x: int) -> int:
    return x + 1

inc = step(inc_fn, name="inc")

@pipeline
def one(start: int = 0):
    return inc(start)

run = one.run(start=41)
import isthmus
out = {"outputs": run.outputs, "hits": run.cache_hits, "version": isthmus.__version__,
       "file": isthmus.__file__, "modules": sorted(sys.modules)}
open(sys.argv[1], "w").write(json.dumps(out, default=str))
"""


def _fresh_process(tmp_path: Path, home: Path) -> dict[str, object]:
    package_root = str(Path(isthmus.__file__).resolve().parents[1])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ISTHMUS_", "OPENLINEAGE"))},
        "ISTHMUS_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    listing = tmp_path / "modules.json"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(listing)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    seen: dict[str, object] = json.loads(listing.read_text())
    assert Path(str(seen["file"])).resolve() == Path(isthmus.__file__).resolve()  # the code under test
    return seen


def test_a_step_run_on_the_default_store_loads_neither_pydantic_nor_fsspec(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _fresh_process(tmp_path, home)
    again = _fresh_process(tmp_path, home)
    assert (first["hits"], again["hits"]) == (0, 1)  # recorded, then a cache hit in a second process
    assert first["outputs"] == again["outputs"]
    unwanted = {"pydantic", "pydantic_core", "fsspec", "isthmus.resources"}
    for seen in (first, again):
        modules = set(seen["modules"])  # type: ignore[call-overload]
        assert "isthmus.runner" in modules
        assert sorted(unwanted & modules) == []
    import importlib.metadata

    assert first["version"] == importlib.metadata.version("isthmus")  # the constant is the distribution's


def test_a_step_without_resources_still_has_an_empty_resources_model() -> None:
    @isthmus.step
    def plain(x: int) -> int:
        return x

    assert plain.resources == Resources()
    assert plain.resources_dict() == {}
    plain.resources = {"cpu": 2}
    assert plain.resources.cpu == 2.0 and plain.resources_dict() == {"cpu": 2.0}


def test_a_step_with_resources_is_validated_where_it_is_defined() -> None:
    with pytest.raises(StepDefinitionError, match=r"step 'fit'.*'4 GB'"):

        @isthmus.step(resources={"memory": "4 GB"})
        def fit(x: int) -> int:
            return x

    @isthmus.step(resources={"memory": "1Gi"})
    def ok(x: int) -> int:
        return x

    assert ok.resources_dict() == {"memory": 1024**3}


@pytest.mark.parametrize("form", ["plain", "file-url"])
def test_a_local_store_gets_fsspecs_local_filesystem_when_asked(tmp_path: Path, form: str) -> None:
    from fsspec.implementations.local import LocalFileSystem

    root = str(tmp_path / "store")
    store = ArtifactStore(root if form == "plain" else f"file://{root}")
    assert store.local and store.root == root and store.url == root and store.protocol == "file"
    assert isinstance(store.fs, LocalFileSystem)
    ref = store.save({"a": 1}, step_name="s", output="o")
    assert store.load(ref) == {"a": 1}
    assert store.fs.exists(store.local_path(ref))


def test_a_relative_local_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("rel/store")
    assert store.local and store.root == str(tmp_path / "rel" / "store")
