"""A store with runs to look at: a chained pipeline run twice (the second all cache hits), once with a
changed parameter, a failed run whose step, parameter and error carry ``<script>`` markup, and an alias
promoted twice."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from isthmus import Client, pipeline, step
from isthmus.errors import StepFailed
from tests.conftest import skip_or_fail
from tests.helpers import REPO, run_python, write_module

HOSTILE = "<script>alert('x')</script>"


@step
def load(n: int) -> list:
    return list(range(n))


@step
def total(items: list, scale: int = 1) -> int:
    return sum(items) * scale


@pipeline
def chain(n: int = 3, scale: int = 1):
    return total(load(n), scale=scale)


@step(name=HOSTILE)
def explode(note: str) -> int:
    raise ValueError(f"bad note {note}")


@pipeline
def hostile(note: str = HOSTILE):
    return explode(note)


@dataclass
class Seeded:
    first: str
    second: str  # all cache hits of the first
    third: str  # scale=2: total computed again
    failed: str
    v1: str  # load.output versions
    v2: str


@pytest.fixture
def seeded() -> Seeded:
    first = chain.run(n=3)
    second = chain.run(n=3)
    third = chain.run(n=4, scale=2)
    with pytest.raises(StepFailed):
        hostile.run()
    client = Client()
    failed = client.run("latest")["id"]
    v1 = first.steps["load"].outputs["output"].content_hash
    v2 = third.steps["load"].outputs["output"].content_hash
    client.promote("load.output@production", v1)
    client.promote("load.output@production", v2)
    return Seeded(first.id, second.id, third.id, failed, v1, v2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(*extra: str) -> Iterator[str]:
    """``isthmus ui`` in its own process on a free port (the test's ISTHMUS_HOME); yields its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "isthmus", "ui", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"isthmus ui exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("isthmus ui did not answer within 60 s") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_DAY_ONE = """
from isthmus import pipeline, step

@step
def clean(n: int) -> list:
    kept = [x for x in range(n) if x % 2 == 0]
    return kept

@pipeline
def daily(n: int = 10):
    return clean(n)
"""


@pytest.fixture
def edited(tmp_path: Path, isthmus_home: Path) -> tuple[str, str]:
    """Two runs of ``daily`` by two fresh processes, the step's source edited on disk in between: the
    ids of the first and second run."""
    project = tmp_path / "project"
    project.mkdir()
    write_module(project, "daily_job", _DAY_ONE)
    code = "import json, daily_job; print(json.dumps(daily_job.daily.run().id))"
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    first = run_python(code, env=env, cwd=project)
    write_module(project, "daily_job", _DAY_ONE.replace("x % 2 == 0]", "x % 3 == 0]  # every third"))
    second = run_python(code, env=env, cwd=project)
    return str(first), str(second)


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(name="browser")
def browser_fixture(tmp_path: Path) -> Iterator[object]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        skip_or_fail(f"no browser: {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (the dev extra)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # the browser cannot start here (no display libraries, a sandbox refusal)
        skip_or_fail(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
