"""FlyteFile / FlyteDirectory outputs of isthmus tasks are stored by their contents (flytekit's local executor)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from flytekitplugins.isthmus import isthmus_task
from isthmus import defaults, step
from isthmus.artifacts.refs import ArtifactRef

WRITTEN: list[Path] = []


@step
def write_report(text: str) -> FlyteFile:
    path = Path(tempfile.mkdtemp(prefix="flyte-out-")) / "report.txt"
    path.write_text(text)
    WRITTEN.append(path)
    return FlyteFile(path=str(path))


@step
def write_bundle(text: str) -> FlyteDirectory:
    root = Path(tempfile.mkdtemp(prefix="flyte-out-")) / "bundle"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "part.txt").write_text(text)
    WRITTEN.append(root)
    return FlyteDirectory(path=str(root))


def _step_runs(step_name: str) -> list[dict]:
    from sqlalchemy import select

    from isthmus.store import schema as s

    store = defaults.metadata_store()
    with store.engine.connect() as conn:
        query = select(s.step_runs).where(s.step_runs.c.step_name == step_name).order_by(s.step_runs.c.started_at)
        return [dict(r) for r in conn.execute(query).mappings()]


def test_a_flytefile_output_is_stored_by_contents_and_a_second_call_hits() -> None:
    WRITTEN.clear()
    task = isthmus_task(write_report)
    ref = task(text="hello flyte")
    assert isinstance(ref, ArtifactRef) and ref.materializer.startswith("flyte-file@")
    assert ref.metadata["kind"] == "file" and ref.metadata["name"] == "report.txt"
    shutil.rmtree(WRITTEN[0].parent)  # the file the task wrote is gone; its contents are in the store

    again = task(text="hello flyte")
    assert again.content_hash == ref.content_hash
    first, second = _step_runs("write_report")
    assert not first["cache_hit"] and second["cache_hit"] and len(WRITTEN) == 1

    loaded = defaults.artifact_store().load(again)
    assert isinstance(loaded, FlyteFile)
    assert Path(loaded.path).name == "report.txt" and Path(loaded.path).read_text() == "hello flyte"
    # a local run of the same step with the same contents is the same cache entry
    assert write_report.run("hello flyte").cache_hit


def test_a_flytedirectory_output_round_trips() -> None:
    WRITTEN.clear()
    task = isthmus_task(write_bundle)
    ref = task(text="inside")
    shutil.rmtree(WRITTEN[0].parent)
    assert task(text="inside").content_hash == ref.content_hash and len(WRITTEN) == 1
    loaded = defaults.artifact_store().load(ref)
    assert isinstance(loaded, FlyteDirectory)
    assert Path(loaded.path).name == "bundle" and (Path(loaded.path) / "sub" / "part.txt").read_text() == "inside"
