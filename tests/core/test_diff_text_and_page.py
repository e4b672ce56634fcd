"""What ``isthmus diff`` prints and writes: recorded text with terminal controls shown by one rule
(``\\x1b``, in the terminal, in ``runs show`` and in the ``--html`` page), a step's code change under its
step with a ``code:`` line, an output gc deleted marked so, two long lists shown where they differ,
and ``runs list --limit`` refusing a limit below 1."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from isthmus import Client, pipeline, step
from isthmus.cli import app
from tests.helpers import import_fresh, invoke, write_module

HOSTILE = "\x1b[31mRED\x07\r"
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@step
def echo(label: str, tags: list) -> str:
    return f"{label}!"


@pipeline
def echoed(label: str = "a", tags: list | None = None):
    return echo(label, tags or [])


def test_controls_in_recorded_text_are_shown_by_one_rule_in_the_terminal_and_the_page(tmp_path: Path) -> None:
    a = echoed.run(label="a", tags=["x"])
    b = echoed.run(label=HOSTILE, tags=[HOSTILE])
    page = tmp_path / "diff.html"
    code, out = invoke("diff", a.id, b.id, "--html", str(page))
    assert code == 0 and not RAW_CONTROLS.search(out), repr(out)
    shown = r"\x1b[31mRED\x07\x0d"
    assert f"  param label: a -> {shown}\n" in out, out  # the pipeline's parameter
    assert f"    param label: a -> {shown}\n" in out, out  # the step's, by the same rule
    assert f'param tags: ["x"] -> ["{shown}"]' in out, out  # inside a list too
    assert "'\\r'" not in out and "\\u001b" not in out, out
    html = page.read_bytes().decode("utf-8")  # as written: read_text would turn a CR into a newline
    assert not RAW_CONTROLS.search(html.replace("\n", "")), [c for c in RAW_CONTROLS.findall(html)]
    assert shown in html and "\\u001b" not in html
    code, out = invoke("runs", "show", b.id)
    assert code == 0 and not RAW_CONTROLS.search(out), repr(out)
    assert f'"label": "{shown}"' in out and "\\u001b" not in out, out
    code, out = invoke("why", f"{b.id}:echo")
    assert code == 0 and shown in out and "\\u001b" not in out and not RAW_CONTROLS.search(out), out


CODED = """
from isthmus import pipeline, step


@step
def page(x: int) -> int:
    return x * {factor}


@pipeline
def paged():
    return page(2)
"""


def test_a_code_change_is_indented_under_its_step_with_a_code_line(tmp_path: Path) -> None:
    write_module(tmp_path, "proj_coded", CODED.replace("{factor}", "1"))
    import_fresh(tmp_path, "proj_coded").paged.run()
    write_module(tmp_path, "proj_coded", CODED.replace("{factor}", "33"))
    import_fresh(tmp_path, "proj_coded").paged.run()
    code, out = invoke("diff", "latest~1", "latest")
    assert code == 0, out
    lines = out.splitlines()
    at = lines.index("  step page:")
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("code:"))
    assert header > at and lines[header].startswith("    code: ") and "page" in lines[header], out
    end = next(i for i, line in enumerate(lines) if line.startswith("How it ran"))
    hunk = lines[header + 1 : end]
    assert "      -    return x * 1" in hunk and "      +    return x * 33" in hunk, hunk
    assert all(line.startswith("      ") for line in hunk if line.strip()), hunk


@step
def rows(n: int) -> list:
    return list(range(n))


@pipeline
def rowed(n: int = 3):
    return rows(n)


def test_an_output_gc_deleted_is_marked_not_shown_as_a_whole_hash(tmp_path: Path) -> None:
    a = rowed.run(n=3)
    b = rowed.run(n=4)
    client = Client()
    client.clear_cache()
    assert client.gc(keep_last=1, grace=0).artifacts_deleted == 1
    d = client.diff_runs(a.id, b.id)
    old_hash = d["steps"]["rows"]["outputs"]["output"][0]
    assert d["steps"]["rows"]["output_values"]["output"][:2] == [old_hash, [0, 1, 2, 3]]
    code, out = invoke("diff", a.id, b.id)
    assert code == 0 and not re.search(r"[0-9a-f]{40}", out), out
    assert f"output output: {old_hash.split(':', 1)[1][:12]} (deleted) -> [0, 1, 2, 3]" in out, out
    code, out = invoke("diff", f"{a.id}:rows", f"{b.id}:rows")
    assert code == 0 and "(deleted) -> [0, 1, 2, 3]" in out, out
    page = tmp_path / "diff.html"
    code, out = invoke("diff", a.id, b.id, "--html", str(page))
    assert code == 0 and f"{old_hash} (deleted)" in page.read_text(), page.read_text()


@step
def summarize(n: int, last: str = "end") -> dict:
    return {"bands": [f"band-{i:03d}" for i in range(n)] + [last], "count": n}


@pipeline
def summarized(n: int = 12, last: str = "end"):
    return summarize(n, last=last)


def test_two_long_lists_are_shown_where_they_first_differ() -> None:
    a = summarized.run(n=12)
    b = summarized.run(n=12, last="END")
    code, out = invoke("diff", a.id, b.id)
    assert code == 0, out
    (line,) = [x for x in out.splitlines() if "output summarize.output bands" in x]
    assert "[12]" in line and '"end"' in line and '"END"' in line, line
    c = summarized.run(n=13)
    code, out = invoke("diff", a.id, c.id)
    (line,) = [x for x in out.splitlines() if "output summarize.output bands" in x]
    assert "[12]" in line and "band-012" in line and "13 items" in line and "14 items" in line, line


def test_runs_list_refuses_a_limit_below_one_in_one_line() -> None:
    echoed.run()
    for command in (["runs", "list"], ["artifacts", "list"], ["cache", "list"]):
        for bad in ("0", "-1"):
            result = CliRunner().invoke(app, [*command, "--limit", bad])
            assert result.exit_code != 0 and result.output.count("\n") == 1, result.output
            assert f"--limit {bad}: give how many to list, 1 or more" in result.output, result.output
    code, out = invoke("runs", "list", "-n", "1")
    assert code == 0 and "echoed" in out
