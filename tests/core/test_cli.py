"""The isthmus CLI: runs, diff, artifacts, cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from isthmus import pipeline, step
from isthmus.cli import app
from tests.helpers import invoke


@step
def make(n: int) -> list:
    return list(range(n))


@step
def count(items: list) -> int:
    return len(items)


@pipeline
def small(n: int = 3):
    return count(make(n))


@pytest.fixture
def two_runs() -> tuple[str, str]:
    a = small.run(n=3)
    b = small.run(n=4)
    return a.id, b.id


def test_runs_list_and_show(two_runs: tuple[str, str]) -> None:
    code, out = invoke("runs", "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [two_runs[1], two_runs[0]]
    assert rows[0]["steps"] == 2 and rows[0]["pipeline"] == "small"
    code, out = invoke("runs", "list")
    assert code == 0 and two_runs[0][:8] in out and "small" in out
    code, out = invoke("runs", "show", two_runs[0][:10])
    assert code == 0 and "make" in out and "count" in out and "COMPLETED" in out
    code, out = invoke("runs", "show", "latest", "--json")
    assert json.loads(out)["run"]["id"] == two_runs[1]


def test_unknown_run_ids_are_clear_errors(two_runs: tuple[str, str]) -> None:
    code, out = invoke("runs", "show", "nope-not-a-run")
    assert code == 1 and "no pipeline run matches 'nope-not-a-run'" in out and "isthmus runs list" in out
    code, out = invoke("diff", "latest~9", "latest")
    assert code == 1 and "only 2 run(s)" in out
    # an id of another kind than the command takes says what it is and what to give instead, in one line
    hash_of = json.loads(invoke("artifacts", "list", "--json")[1])[0]["content_hash"]
    for argv, said in [
        (["runs", "show", "latest:make"], "names a step run (RUN:STEP), not a pipeline run"),
        (["runs", "show", "latest~-1"], "latest~N takes a whole number N >= 0"),
        (["why", "latest"], "is a pipeline run; name one of its steps: RUN:STEP"),
        (["reproduce", two_runs[1][:8]], "is a pipeline run; name one of its steps: RUN:STEP"),
        (["why", hash_of], "is an artifact's content hash, not a step run"),
        (["why", ":make"], "RUN:STEP needs both parts"),
        (["artifacts", "aliases", "--project", ""], "--project '': give a project name"),  # an unset variable
    ]:
        code, out = invoke(*argv)
        assert code == 1 and said in out and len(out.strip().splitlines()) == 1, (argv, out)


def test_diff_shows_param_and_hash_changes(two_runs: tuple[str, str]) -> None:
    code, out = invoke("diff", two_runs[0], two_runs[1], "--json")
    assert code == 0
    d = json.loads(out)
    assert d["params"] == {"n": [3, 4]}
    assert d["steps"]["make"]["params"] == {"n": [3, 4]}
    assert "output" in d["steps"]["make"]["outputs"]
    assert "output" in d["steps"]["count"]["inputs"]["items"] or d["steps"]["count"]["inputs"]
    code, text = invoke("diff", two_runs[0], two_runs[1])
    assert code == 0 and "param n: 3 -> 4" in text


def test_artifacts_list_show_and_alias_rollback(two_runs: tuple[str, str]) -> None:
    code, out = invoke("artifacts", "list", "--name", "make.output", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2
    old, new = rows[1]["content_hash"], rows[0]["content_hash"]
    code, out = invoke("artifacts", "alias", "make.output@prod", new[:20])
    assert code == 0
    code, out = invoke("artifacts", "show", "make.output@prod", "--json")
    assert json.loads(out)["artifact"]["content_hash"] == new
    code, out = invoke("artifacts", "alias", "make.output@prod", old)  # roll back
    code, out = invoke("artifacts", "show", "make.output@prod", "--json")
    data = json.loads(out)
    assert data["artifact"]["content_hash"] == old and data["producer"]["step_name"] == "make"
    code, out = invoke("artifacts", "show", "deadbeef")
    assert code == 1 and "matches no artifact" in out


def test_cache_list_clear_prune(two_runs: tuple[str, str]) -> None:
    code, out = invoke("cache", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 4
    code, out = invoke("cache", "clear", "--step", "count", "--yes")
    assert code == 0 and "cleared 2" in out
    assert small.run(n=3).steps["count"].cache_hit is False
    code, out = invoke("cache", "prune")
    assert code == 0 and "expired entries: 0" in out
    code, out = invoke("cache", "clear", "--yes")
    assert code == 0
    assert json.loads(invoke("cache", "list", "--json")[1]) == []


def test_python_dash_m_entrypoint_runs() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "isthmus", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run-step" in out.stdout and "diff" in out.stdout


def test_diff_shows_environment_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    small.run(n=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    small.run(n=2)
    code, out = invoke("diff", "latest~1", "latest", "--json")
    assert code == 0
    assert json.loads(out)["environment"]["env"] == {"OMP_NUM_THREADS": ["1", "8"]}
    code, text = invoke("diff", "latest~1", "latest")
    assert "env.OMP_NUM_THREADS: 1 -> 8" in text


def test_the_console_script_imports_steps_from_the_directory_it_runs_in(tmp_path: Path) -> None:
    """``isthmus run-step --step mymodule:fn`` from a project directory, as ``python -m isthmus`` would."""
    import os
    import subprocess
    import sys

    (tmp_path / "proj_cwd_step.py").write_text(
        "from isthmus import step\n\n\n@step\ndef doubled(x: int) -> int:\n    return 2 * x\n"
    )
    script = Path(sys.executable).parent / "isthmus"
    env = {**os.environ, "ISTHMUS_HOME": str(tmp_path / "home")}
    manifest = tmp_path / "result.json"
    argv = [str(script), "run-step", "--step", "proj_cwd_step:doubled", "--params", '{"x": 21}']
    out = subprocess.run([*argv, "--manifest", str(manifest)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(manifest.read_text())["status"] == "COMPLETED"


def test_a_query_imports_only_what_it_needs(tmp_path: Path) -> None:
    """``isthmus runs list`` in a fresh process imports no other command's module, nor pydantic, typer or
    fsspec: each command module is imported only when its command runs."""
    import os
    import subprocess
    import sys

    import isthmus
    from isthmus.store.metadata import MetadataStore

    script = (
        "import json, sys\n"
        "from isthmus.cli import app\n"
        "app(['runs', 'list'], standalone_mode=False)\n"
        "import isthmus\n"
        "open(sys.argv[1], 'w').write(json.dumps({'file': isthmus.__file__, 'modules': sorted(sys.modules)}))\n"
    )
    package_root = str(Path(isthmus.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    listing = tmp_path / "modules.json"
    MetadataStore(f"sqlite:///{tmp_path / 'home' / 'isthmus.db'}").dispose()  # an empty store: the empty table
    out = subprocess.run(
        [sys.executable, "-c", script, str(listing)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Pipeline runs" in out.stdout
    seen = json.loads(listing.read_text())
    assert Path(seen["file"]).resolve() == Path(isthmus.__file__).resolve()  # the code under test, not another copy
    modules = set(seen["modules"])
    assert "isthmus.cli.runs" in modules
    unwanted = {
        "pydantic",
        "typer",
        "fsspec",
        "isthmus.cli.artifacts",
        "isthmus.cli.k8s",
        "isthmus.cli.governance",
        "isthmus.cli.ui",
        "isthmus.cli.rerun",
        "isthmus.cli.html",
        "isthmus.cli.lineage_gc",
    }
    assert sorted(unwanted & modules) == []


def test_every_command_has_help() -> None:
    """``--help`` works on every group and command (each lazily imported module loads and lists its commands)."""
    import click

    def walk(group: click.Group, path: list[str]) -> list[list[str]]:
        found = []
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None, name
            found.append([*path, name])
            if isinstance(cmd, click.Group):
                found += walk(cmd, [*path, name])
        return found

    commands = walk(app, [])
    assert ["runs", "list"] in commands and ["artifacts", "alias"] in commands and ["version"] in commands
    for argv in commands:
        code, out = invoke(*argv, "--help")
        assert code == 0 and "Usage:" in out, (argv, out)
    for group in ([], ["runs"], ["k8s"]):  # a group without arguments prints its help on stdout, exit code 2
        result = CliRunner().invoke(app, group)
        assert result.exit_code == 2 and result.stdout.startswith("Usage:") and "Commands:" in result.stdout
    assert "run-step" in CliRunner().invoke(app, []).stdout


def test_the_command_line_records_its_actions_as_cli_and_version_needs_no_store(tmp_path: Path) -> None:
    """Run as ``python -m isthmus``, an audited action says it came from the command line; ``version`` imports
    neither the audit log nor SQLAlchemy."""
    import os
    import subprocess
    import sys

    import isthmus

    package_root = str(Path(isthmus.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }

    def isthmus_cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "isthmus", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    isthmus_cli("tokens", "create", "--role", "viewer", "--json")
    entries = json.loads(isthmus_cli("audit", "--json"))
    assert [(e["action"], e["via"]) for e in entries] == [("token.create", "cli")]
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "isthmus", "version"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout == f"{isthmus.__version__}\n", out.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "isthmus.cli.app" in imported
    assert sorted(m for m in imported if m.startswith(("sqlalchemy", "isthmus.governance"))) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lineage", "latest", "--depth", "-1"], "Invalid value for '--depth': -1 is not in the range x>=0."),
        (["gc", "--keep-last", "-1"], "Invalid value for '--keep-last': -1 is not in the range x>=0."),
        (["cache", "list", "-n", "abc"], "Invalid value for '--limit' / '-n': 'abc' is not a valid integer."),
        (["runs", "bogus"], "No such command 'bogus'."),
        (["why"], "Missing argument 'STEP_RUN'."),
        (["gc", "--nope"], "No such option '--nope'."),
    ],
)
def test_a_usage_mistake_is_one_line_naming_the_help(argv: list[str], message: str) -> None:
    """A bad option value, an unknown option or command, a missing argument: one line (as every other
    error), the value and where the help is; click's exit code for usage errors (2)."""
    result = CliRunner().invoke(app, argv)
    where = "isthmus " + " ".join(a for a in argv[:2] if not a.startswith("-") and a not in ("latest", "bogus"))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"error: {message} (see '{where.strip()} --help')\n"


def test_a_usage_mistake_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "ISTHMUS_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "audit", "-n", "0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: Invalid value for '--limit' / '-n': 0 is not in the range x>=1.")


def test_a_command_that_reads_records_says_when_there_is_no_store(tmp_path: Path) -> None:
    """A typo in ISTHMUS_HOME (or nothing run there yet): reading commands say there is no store there, in
    one line, and create nothing; --help and commands that record still work."""
    import os
    import subprocess
    import sys

    home = tmp_path / "typo" / "deeper"
    env = {**os.environ, "ISTHMUS_HOME": str(home)}
    env.pop("ISTHMUS_STORE_URL", None)
    for argv in (["runs", "list"], ["why", "latest:x"], ["gc", "--dry-run"], ["artifacts", "list"], ["audit"]):
        proc = subprocess.run(
            [sys.executable, "-m", "isthmus", *argv], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1, (argv, proc.stderr)
        assert proc.stderr.startswith(f"error: no isthmus store at {home / 'isthmus.db'} (ISTHMUS_HOME={home})")
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "runs", "list", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0 and "Usage:" in proc.stdout
    assert not (tmp_path / "typo").exists()
