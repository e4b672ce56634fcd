"""The artifact store on a real S3-protocol server (moto's, started by the fixture), across processes:
a killed upload leaves nothing a reader can find, writers of the same content race harmlessly, and the
credentials reach no record, lineage event or object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.hashing import hash_bytes
from tests.helpers import REPO

SIZE = 16 << 20  # with 5 MiB parts: a multipart upload of four parts

VALUE = "bytes(range(256)) * (SIZE // 256)"

WRITER = f"""
import asyncio, json, os, sys, time
import s3fs.core
from isthmus.artifacts.store import ArtifactStore

SIZE = {SIZE}
s3fs.core.calculate_chunksize = lambda filesize, chunksize=None, max_parts=10000: 5 << 20
mode, root = sys.argv[1], sys.argv[2]
real_call = s3fs.core.S3FileSystem._call_s3

async def spy(self, method, *args, **kwargs):
    if method == "complete_multipart_upload" and mode == "hang":
        print("completing", flush=True)
        while True:  # every part is up; the parent kills us before the upload completes
            await asyncio.sleep(1)
    return await real_call(self, method, *args, **kwargs)

s3fs.core.S3FileSystem._call_s3 = spy
store = ArtifactStore(root, local_cache=sys.argv[3])
if mode == "race":
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.005)
ref = store.save({VALUE})
print("REF " + ref.to_json(), flush=True)
"""


def _env(s3_server: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISTHMUS_", "AWS_", "OPENLINEAGE"))}
    env.update(s3_server.env(), PYTHONPATH=str(REPO), **extra)
    return env


def _keys(s3_server: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def _writer(tmp_path: Path) -> Path:
    path = tmp_path / "writer.py"
    path.write_text(textwrap.dedent(WRITER))
    return path


def test_a_killed_upload_leaves_nothing_a_reader_can_find(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/root"
    proc = subprocess.Popen(
        [sys.executable, str(_writer(tmp_path)), "hang", root, str(tmp_path / "cache-w")],
        env=_env(s3_server),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "completing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the upload was not under way"
    data = bytes(range(256)) * (SIZE // 256)
    content_hash = hash_bytes(data)
    assert not [k for k in _keys(s3_server, bucket) if content_hash.split(":")[1] in k]
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    reader = ArtifactStore(root, local_cache=str(tmp_path / "cache-r"))
    ref = ArtifactRef(
        uri=reader.uri_for(content_hash),
        content_hash=content_hash,
        size=len(data),
        materializer="bytes@1",
        python_type="builtins:bytes",
        metadata={},
    )
    assert not reader.exists(ref) and not reader.is_valid(ref, "hash")
    # a later writer completes it; a reader then gets the very bytes
    done = subprocess.run(
        [sys.executable, str(_writer(tmp_path)), "save", root, str(tmp_path / "cache-w2")],
        env=_env(s3_server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    saved = ArtifactRef.from_json(done.stdout.split("REF ", 1)[1].strip())
    assert saved.content_hash == content_hash
    assert reader.load(saved, verify=True) == data


def test_concurrent_writers_of_the_same_content_agree(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3_server.new_bucket()
    root, go = f"s3://{bucket}/root", tmp_path / "go"
    writer = _writer(tmp_path)  # written once: rewriting it while a started writer reads it gives it an empty script
    procs = [
        subprocess.Popen(
            [sys.executable, str(writer), "race", root, str(tmp_path / f"cache-{i}"), str(go)],
            env=_env(s3_server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    time.sleep(1.0)
    go.touch()
    refs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        refs.append(json.loads(out.split("REF ", 1)[1]))
    assert all(r == refs[0] for r in refs)
    ref = ArtifactRef.from_json(json.dumps(refs[0]))
    objects = [k for k in _keys(s3_server, bucket) if "/objects/" in f"/{k}"]
    assert len(objects) == 1, objects
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    data = ArtifactStore(root, local_cache=str(tmp_path / "cache-r")).load(ref, verify=True)
    assert data == bytes(range(256)) * (SIZE // 256)


PIPELINE = """
from isthmus import pipeline, step

@step
def load(n: int) -> list:
    return list(range(n))

@step
def total(xs: list) -> int:
    return sum(xs)

@pipeline
def flow(n: int = 3):
    return total(load(n))

run = flow.run(n=4)
assert flow.run(n=4).cache_hits == 2
print(run.outputs)
"""


def test_credentials_reach_no_record_event_or_object(s3_server: Any, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    home = tmp_path / "home"
    (tmp_path / "flow_mod.py").write_text(textwrap.dedent(PIPELINE))
    secret, key_id = "s3canary-Secret-7f3a9c21e0", "AKIACANARY7F3A9C21"
    env = _env(s3_server, ISTHMUS_HOME=str(home), ISTHMUS_ARTIFACT_ROOT=f"s3://{bucket}/root")
    env.update(AWS_SECRET_ACCESS_KEY=secret, AWS_ACCESS_KEY_ID=key_id)  # moto takes any credentials
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "flow_mod.py")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "6"
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "events.jsonl" for p in files) and any(p.suffix == ".db" for p in files)
    for path in files:
        blob = path.read_bytes()
        assert secret.encode() not in blob and key_id.encode() not in blob, path
    client = s3_server.client()
    keys = _keys(s3_server, bucket)
    assert keys
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert secret.encode() not in body and key_id.encode() not in body, key
