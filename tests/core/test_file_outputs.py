"""Files a step returns are stored by their contents: ``pathlib.Path`` outputs (files and directories) and
file objects, in process, across two fresh processes, on S3, and against hostile archives."""

from __future__ import annotations

import dataclasses
import io
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus import StepFailed, defaults, pipeline, step
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.errors import MaterializationError
from tests.helpers import run_python, write_module

CALLS: list[str] = []


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@step
def write_file(where: str, text: str = "a,b\n1,2\n") -> Path:
    CALLS.append("write_file")
    path = Path(where) / "report.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@step
def write_tree(where: str) -> Path:
    CALLS.append("write_tree")
    root = Path(where) / "model"
    (root / "weights").mkdir(parents=True, exist_ok=True)
    (root / "empty").mkdir(exist_ok=True)
    (root / "config.json").write_text('{"layers": 2}')
    (root / "weights" / "w.bin").write_bytes(bytes(range(256)) * 4)
    return root


@step
def read_text(path: Path) -> str:
    CALLS.append("read_text")
    return path.read_text()


@step
def missing(where: str) -> Path:
    return Path(where) / "never-written.txt"


@step
def buffer_out(data: bytes) -> io.BytesIO:
    out = io.BytesIO()
    out.write(data)
    return out  # not rewound: the whole buffer is the value


@pipeline
def handoff(where: str):
    return read_text(write_file(where))


def _store() -> ArtifactStore:
    return defaults.artifact_store()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _tree(root: Path) -> dict[str, Any]:
    """Relative path -> bytes (files), 'dir', or ('link', target)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = full.read_bytes()
    return out


# -- files and directories in process ----------------------------------------------------------------
def test_a_file_output_is_stored_by_contents_and_loads_a_read_only_copy_with_its_name(tmp_path: Path) -> None:
    first = write_file.run(str(tmp_path / "out"))
    ref = first.outputs["output"]
    assert ref.materializer.startswith("path-tar@")
    assert ref.python_type.startswith("pathlib:")
    assert ref.metadata["kind"] == "file" and ref.metadata["name"] == "report.csv"
    original = tmp_path / "out" / "report.csv"
    original.unlink()  # the contents are in the store, not at the path the step wrote

    loaded = first.value
    assert isinstance(loaded, Path) and loaded.name == "report.csv"
    assert loaded.read_text() == "a,b\n1,2\n"
    assert loaded != original and not loaded.is_relative_to(tmp_path / "out")
    assert _mode(loaded) & 0o222 == 0  # read-only

    second = write_file.run(str(tmp_path / "out"))
    assert second.cache_hit and CALLS == ["write_file"]
    assert second.value.read_text() == "a,b\n1,2\n"


def test_a_directory_output_round_trips_with_its_tree(tmp_path: Path) -> None:
    result = write_tree.run(str(tmp_path / "w"))
    ref = result.outputs["output"]
    assert ref.metadata["kind"] == "directory" and ref.metadata["files"] == 2
    expected = _tree(tmp_path / "w" / "model")
    loaded = result.value
    assert loaded.name == "model" and loaded.is_dir()
    assert _tree(loaded) == expected
    assert all(_mode(p) & 0o222 == 0 for p in [loaded, *loaded.rglob("*")])


def test_an_empty_directory_round_trips(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    ref = _store().save(empty, step_name="s", output="o")
    loaded = _store().load(ref)
    assert loaded.is_dir() and loaded.name == "nothing" and list(loaded.iterdir()) == []


def test_same_contents_same_hash_whatever_the_location_mtime_or_mode(tmp_path: Path) -> None:
    def make(root: Path, mode: int, mtime: float, text: str = "same") -> Path:
        tree = root / "data"
        (tree / "sub").mkdir(parents=True)
        for path in (tree / "a.txt", tree / "sub" / "b.txt"):
            path.write_text(text)
            path.chmod(mode)
            os.utime(path, (mtime, mtime))
        return tree

    store = _store()
    one = store.save(make(tmp_path / "one", 0o600, 1_000_000), step_name="s", output="o")
    two = store.save(make(tmp_path / "two", 0o755, time.time()), step_name="s", output="o")
    assert one.content_hash == two.content_hash
    other = store.save(make(tmp_path / "three", 0o600, 1_000_000, text="different"), step_name="s", output="o")
    assert other.content_hash != one.content_hash

    file_a, file_b = tmp_path / "x" / "f.bin", tmp_path / "y" / "f.bin"
    for path, mode, mtime in ((file_a, 0o400, 10), (file_b, 0o777, 99999)):
        path.parent.mkdir()
        path.write_bytes(b"payload")
        path.chmod(mode)
        os.utime(path, (mtime, mtime))
    assert store.save(file_a).content_hash == store.save(file_b).content_hash
    # the name is part of the value (a downstream step may read its suffix): another name, another hash
    renamed = tmp_path / "z" / "g.bin"
    renamed.parent.mkdir()
    renamed.write_bytes(b"payload")
    assert store.save(renamed).content_hash != store.save(file_a).content_hash


def test_a_missing_path_fails_the_step_in_one_line_naming_step_and_output(tmp_path: Path) -> None:
    with pytest.raises(StepFailed) as info:
        missing.run(str(tmp_path))
    message = str(info.value)
    assert "'missing'" in message and "output 'output'" in message and "does not exist" in message
    assert "\n" not in message
    with pytest.raises(MaterializationError, match=r"step 'w' output 'o': .*never-written.txt.*does not exist"):
        _store().save(tmp_path / "never-written.txt", step_name="w", output="o")


def test_a_link_escaping_the_directory_is_refused_and_an_inner_link_is_kept(tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "real.txt").write_text("inside")
    (tree / "inner").symlink_to("sub/real.txt")
    ref = _store().save(tree, step_name="s", output="o")
    loaded = _store().load(ref)
    assert os.readlink(loaded / "inner") == "sub/real.txt" and (loaded / "inner").read_text() == "inside"

    for name, target in (("up", "../outside.txt"), ("abs", str(secret)), ("deep", "sub/../../outside.txt")):
        link = tree / name
        link.symlink_to(target)
        with pytest.raises(MaterializationError, match=rf"step 's' output 'o': .*{name}.* outside"):
            _store().save(tree, step_name="s", output="o")
        link.unlink()
    # a link that is itself inside, used as a stepping stone out of the directory
    (tree / "here").symlink_to(".")
    (tree / "via").symlink_to("here/../outside.txt")
    with pytest.raises(MaterializationError, match="via"):
        _store().save(tree, step_name="s", output="o")


def test_a_loaded_copy_that_was_changed_is_replaced(tmp_path: Path) -> None:
    result = write_file.run(str(tmp_path))
    loaded = result.value
    loaded.chmod(0o644)
    loaded.write_text("tampered")
    assert result.value.read_text() == "a,b\n1,2\n"


def test_a_path_between_steps_keys_the_next_step_by_contents(tmp_path: Path) -> None:
    first = handoff.run(where=str(tmp_path / "one"))
    assert first.outputs == "a,b\n1,2\n"
    second = handoff.run(where=str(tmp_path / "two"))  # same contents written somewhere else
    assert not second.steps["write_file"].cache_hit
    assert second.steps["read_text"].cache_hit
    assert CALLS == ["write_file", "read_text", "write_file"]


def test_deleting_the_stored_artifact_is_a_miss(tmp_path: Path) -> None:
    ref = write_file.run(str(tmp_path)).outputs["output"]
    os.remove(_store().path_for(ref.content_hash))
    again = write_file.run(str(tmp_path))
    assert not again.cache_hit and CALLS == ["write_file", "write_file"]
    assert again.value.read_text() == "a,b\n1,2\n"


# -- file objects ----------------------------------------------------------------------------------
def test_a_file_holding_a_secret_the_step_was_given_is_never_stored(tmp_path: Path) -> None:
    """The value is a path and shows no secret; the bytes behind it do: the output is refused, nothing written."""
    canary = "file-CANARY-77c1e"

    @step
    def dump(password: str, where: str) -> Path:
        out = Path(where) / "conn"
        out.mkdir()
        (out / "dsn.txt").write_text(f"postgres://svc:{password}@db/app")
        return out

    @step
    def dump_bytes(password: str) -> io.BytesIO:
        return io.BytesIO(b"x" * 70_000 + password.encode())

    for call in (lambda: dump.run(canary, str(tmp_path)), lambda: dump_bytes.run(canary)):
        with pytest.raises(StepFailed, match="holds a secret") as info:
            call()
        assert canary not in str(info.value)
    stored = [p.read_bytes() for p in Path(defaults.artifact_store().root).rglob("*") if p.is_file()]
    assert not any(canary.encode() in data for data in stored)


def test_file_objects_store_their_bytes_and_load_as_bytesio(tmp_path: Path) -> None:
    result = buffer_out.run(b"\x00binary\xff")
    assert result.outputs["output"].materializer.startswith("file-object@")
    loaded = result.value
    assert isinstance(loaded, io.BytesIO) and loaded.read() == b"\x00binary\xff"

    source = tmp_path / "f.bin"
    source.write_bytes(b"from disk")
    store = _store()
    with open(source, "rb") as fh:
        fh.read(3)  # the position does not matter: the whole file is the value
        ref = store.save(fh)
        assert fh.tell() == 3
    source.unlink()
    assert store.load(ref).getvalue() == b"from disk"
    text = tmp_path / "t.txt"
    text.write_text("héllo", encoding="utf-8")
    with open(text, encoding="utf-8") as fh:
        assert store.load(store.save(fh)).getvalue() == "héllo".encode()
    with open(text, "rb") as fh:
        pass
    with pytest.raises(MaterializationError, match=r"step 's' output 'o': .*closed.*Path"):
        store.save(fh, step_name="s", output="o")


# -- hostile archives: the stored bytes are untrusted ------------------------------------------------
def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


HOSTILE = {
    "parent member": [(_info("top", tarfile.DIRTYPE), None), (_info("top/../../escaped.txt"), b"x")],
    "absolute member": [(_info("/tmp/isthmus-escaped.txt"), b"x")],
    "top is dot-dot": [(_info("..", tarfile.DIRTYPE), None), (_info("../escaped.txt"), b"x")],
    "two tops": [(_info("top", tarfile.DIRTYPE), None), (_info("other.txt"), b"x")],
    "write through a link": [
        (_info("top", tarfile.DIRTYPE), None),
        (_info("top/l", tarfile.SYMTYPE, "../.."), None),
        (_info("top/l/escaped.txt"), b"x"),
    ],
    "link out": [(_info("top", tarfile.DIRTYPE), None), (_info("top/l", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "link up": [(_info("top", tarfile.DIRTYPE), None), (_info("top/l", tarfile.SYMTYPE, "../escaped.txt"), None)],
    "link stepping stone": [
        (_info("top", tarfile.DIRTYPE), None),
        (_info("top/s", tarfile.SYMTYPE, "."), None),
        (_info("top/t", tarfile.SYMTYPE, "s/../escaped.txt"), None),
    ],
    "hard link": [(_info("top", tarfile.DIRTYPE), None), (_info("top/h", tarfile.LNKTYPE, "/etc/passwd"), None)],
    "device": [(_info("top", tarfile.DIRTYPE), None), (_info("top/d", tarfile.CHRTYPE), None)],
    "duplicate": [(_info("top", tarfile.DIRTYPE), None), (_info("top/a"), b"1"), (_info("top/a"), b"2")],
    "member before its directory": [(_info("top", tarfile.DIRTYPE), None), (_info("top/sub/a"), b"1")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_never_writes_outside_its_directory(tmp_path: Path, isthmus_home: Path, case: str) -> None:
    store = _store()
    plain = store.save(_tar(HOSTILE[case]))  # stored as bytes, then relabelled by whoever forged the ref
    forged = dataclasses.replace(plain, materializer="path-tar@1", python_type="pathlib:PosixPath")
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(MaterializationError, match="archive"):
        store.load(forged)
    after = {p for p in tmp_path.rglob("*")}
    files = isthmus_home / "files"
    new = {p for p in after - before if not p.is_relative_to(files)}
    assert new == set(), new
    assert not Path("/tmp/isthmus-escaped.txt").exists()
    assert not any(p.name == "escaped.txt" for p in after)
    # nothing half-extracted is left where a later load would look
    assert [p for p in files.rglob("*") if p.is_file() or p.is_symlink()] == [] if files.exists() else True


@pytest.mark.parametrize("data", [b"not a tar at all", b"", b"\0" * 1024], ids=["text", "empty", "zeros"])
def test_bytes_that_are_no_archive_are_refused(data: bytes) -> None:
    ref = dataclasses.replace(_store().save(data), materializer="path-tar@1", python_type="pathlib:PosixPath")
    with pytest.raises(MaterializationError, match="stored archive refused"):
        _store().load(ref)


def test_a_forged_ref_of_a_well_formed_archive_still_loads_only_inside(tmp_path: Path) -> None:
    ok = _tar([(_info("top", tarfile.DIRTYPE), None), (_info("top/a.txt"), b"fine")])
    ref = dataclasses.replace(_store().save(ok), materializer="path-tar@1", python_type="pathlib:PosixPath")
    loaded = _store().load(ref)
    assert loaded.name == "top" and (loaded / "a.txt").read_bytes() == b"fine"


# -- two fresh processes ---------------------------------------------------------------------------
STEPS = """
from pathlib import Path
from isthmus import step

@step
def produce(where: str) -> Path:
    out = Path(where) / "{name}"
    {body}
    return out
"""

FILE_BODY = 'out.parent.mkdir(parents=True, exist_ok=True); out.write_text("{text}")'
DIR_BODY = '(out / "sub").mkdir(parents=True, exist_ok=True); (out / "sub" / "x.txt").write_text("{text}")'

RUN = """
import json, os
from isthmus import defaults
from proj_files import produce
result = produce.run(WHERE)
value = result.value
ref = result.outputs["output"]
if value.is_dir():
    text = (value / "sub" / "x.txt").read_text()
else:
    text = value.read_text()
print(json.dumps({"hit": result.cache_hit, "path": str(value), "text": text, "hash": ref.content_hash,
                  "object": defaults.artifact_store().path_for(ref.content_hash)}))
"""


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_two_processes_hit_with_the_contents_after_the_original_is_deleted(
    tmp_path: Path, isthmus_home: Path, kind: str
) -> None:
    import shutil

    name, body = ("data.txt", FILE_BODY) if kind == "file" else ("bundle", DIR_BODY)
    project = tmp_path / "project"
    project.mkdir()
    where = tmp_path / "written"

    def source(text: str) -> None:
        write_module(project, "proj_files", STEPS.format(name=name, body=body.format(text=text)))

    env = {"ISTHMUS_HOME": str(isthmus_home)}
    code = RUN.replace("WHERE", repr(str(where)))
    source("first")
    one = run_python(code, env=env, cwd=project)
    assert not one["hit"] and one["text"] == "first"
    shutil.rmtree(where)  # the file the step wrote is gone: the artifact is the contents

    two = run_python(code, env=env, cwd=project)
    assert two["hit"] and two["text"] == "first" and two["hash"] == one["hash"]
    assert Path(two["path"]).name == name and not Path(two["path"]).is_relative_to(where)
    shutil.rmtree(isthmus_home / "files", onerror=_writable_then_retry)  # loaded copies are a cache too
    assert run_python(code, env=env, cwd=project)["text"] == "first"

    source("second")  # the user edits the step: it writes other contents
    three = run_python(code, env=env, cwd=project)
    assert not three["hit"] and three["text"] == "second" and three["hash"] != one["hash"]

    os.remove(three["object"])  # the stored artifact is deleted: never a hit on a dangling entry
    four = run_python(code, env=env, cwd=project)
    assert not four["hit"] and four["text"] == "second" and os.path.exists(four["object"])


def _writable_then_retry(function: Any, path: str, _exc: Any) -> None:
    os.chmod(os.path.dirname(path), 0o700)
    function(path)


# -- S3 ----------------------------------------------------------------------------------------------
def test_a_path_output_round_trips_through_s3(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = s3_server.new_bucket()
    writer = ArtifactStore(f"s3://{bucket}/root", local_cache=str(tmp_path / "cache-writer"))
    tree = tmp_path / "src" / "model"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "w.bin").write_bytes(b"\x01\x02" * 1000)
    (tree / "card.md").write_text("# model")
    ref = writer.save(tree, step_name="train", output="model")
    assert ref.uri.startswith("s3://")
    expected = _tree(tree)
    import shutil

    shutil.rmtree(tmp_path / "src")
    reader = ArtifactStore(f"s3://{bucket}/root", local_cache=str(tmp_path / "cache-reader"))
    loaded = reader.load(ArtifactRef.from_dict(ref.to_dict()))
    assert loaded.name == "model" and _tree(loaded) == expected
