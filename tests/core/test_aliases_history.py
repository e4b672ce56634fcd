"""Promote and roll back with a kept history; artifact ids (hash, prefix, name, name@alias, name@latest,
name~N); ``artifacts list|show|alias|history`` and ``rollback`` on the command line."""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from isthmus import Client, pipeline, step
from isthmus.aliases import AliasRefused
from isthmus.errors import RunNotFound
from isthmus.store import metadata as metadata_module
from isthmus.store.metadata import MetadataStore
from tests.helpers import finish_train_run, invoke, start_train_run


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
def versions() -> list[str]:
    """Three versions of make.output (n = 3, 4, 5), oldest first, and a cache hit of the second."""
    hashes = [small.run(n=n).steps["make"].outputs["output"].content_hash for n in (3, 4, 5)]
    assert small.run(n=4).steps["make"].cache_hit
    return hashes


def test_artifact_ids_name_latest_back_prefix_and_alias(versions: list[str]) -> None:
    client = Client()
    v1, v2, v3 = versions
    assert client.artifact("make.output").content_hash == v3  # a hit of v2 made no new version
    assert client.artifact("make.output@latest").content_hash == v3
    assert client.artifact("make.output~0").content_hash == v3
    assert client.artifact("make.output~1").content_hash == v2
    assert client.artifact("make.output~2").content_hash == v1
    got = client.artifact(v2.split(":")[1][:10])
    assert got.content_hash == v2 and got.name == "make.output" and (got.number, got.versions) == (2, 3)
    assert (
        client.artifact(v1).number == 1 and client.artifact(v1.upper().replace("BLAKE3", "blake3")).content_hash == v1
    )
    client.promote("make.output@production", "make.output~1")
    assert client.artifact("make.output@production").content_hash == v2
    with pytest.raises(
        RunNotFound, match=r"make.output has 3 version\(s\) in this store, so make.output~0 … make.output~2"
    ):
        client.artifact("make.output~3")
    with pytest.raises(RunNotFound, match="no alias 'make.output@staging'"):
        client.artifact("make.output@staging")
    with pytest.raises(RunNotFound, match=r"no artifact named 'make' \(did you mean 'make.output'\?\)"):
        client.artifact("make")
    with pytest.raises(RunNotFound, match="matches no artifact"):
        client.artifact("blake3:ffff")


def test_every_version_has_its_number_and_its_back_id(versions: list[str]) -> None:
    client = Client()
    assert [client.artifact(f"make.output~{n}").content_hash for n in (0, 1, 2)] == versions[::-1]
    assert [(client.artifact(v).number, client.artifact(v).versions) for v in versions] == [(1, 3), (2, 3), (3, 3)]
    assert [r["id"] for r in client.artifact_versions("make.output")] == [
        "make.output",
        "make.output~1",
        "make.output~2",
    ]


def test_promote_refuses_another_names_version_unless_forced(versions: list[str]) -> None:
    client = Client()
    count_v = client.artifact("count.output").content_hash
    with pytest.raises(AliasRefused, match=r"not a version of make.output.*pass --force") as info:
        client.promote("make.output@production", "count.output")
    assert "a version of count.output" in str(info.value)
    assert client.alias_history("make.output@production") == []
    forced = client.promote("make.output@production", "count.output", force=True, reason="hotfix")
    assert forced is not None and forced.forced and forced.to_hash == count_v
    assert client.promote("make.output@production", count_v, force=True) is None  # already there: no change
    with pytest.raises(AliasRefused, match="'@latest' always means the newest version"):
        client.promote("make.output@latest", "make.output~1")


def test_rollback_twice_walks_back_through_the_history(versions: list[str]) -> None:
    client = Client()
    v1, v2, v3 = versions
    for version, why in ((v1, "first model"), ("make.output~1", "better"), ("make.output", "best")):
        client.promote("make.output@production", version, reason=why)
    back = client.rollback("make.output@production", reason="v3 is broken")
    assert (back.action, back.from_hash, back.to_hash) == ("rollback", v3, v2)
    again = client.rollback("make.output@production")
    assert (again.from_hash, again.to_hash) == (v2, v1)
    with pytest.raises(AliasRefused, match="make.output@production has no previous target"):
        client.rollback("make.output@production")
    # promote again, then roll back --to a version: it becomes the target
    client.promote("make.output@production", v3)
    to = client.rollback("make.output@production", to="make.output~1")
    assert to.to_hash == v2 and client.artifact("make.output@production").content_hash == v2
    with pytest.raises(AliasRefused, match="not a version of make.output"):
        client.rollback("make.output@production", to="count.output")
    with pytest.raises(AliasRefused, match="no alias make.output@staging to roll back"):
        client.rollback("make.output@staging")

    history = client.alias_history("make.output@production")
    assert [(h.action, h.to_hash) for h in history] == [
        ("set", v1),
        ("set", v2),
        ("set", v3),
        ("rollback", v2),
        ("rollback", v1),
        ("set", v3),
        ("rollback", v2),
    ]
    first = history[0]
    assert first.from_hash is None and history[1].from_hash == v1
    assert first.user == getpass.getuser() and first.host == socket.gethostname() and first.via == "api"
    assert first.reason == "first model" and history[3].reason == "v3 is broken" and history[4].reason is None
    assert all(h.changed_at is not None and not h.forced for h in history)
    assert [h.changed_at for h in history] == sorted(h.changed_at for h in history)


def test_reasons_are_kept_without_secrets(versions: list[str]) -> None:
    client = Client()
    change = client.promote(
        "make.output@production", "make.output", reason="from postgresql://ml:hunter2@db/x\nsee ticket"
    )
    assert change is not None and "hunter2" not in (change.reason or "") and "\n" not in (change.reason or "")


def test_cli_alias_history_rollback_show_and_list(versions: list[str]) -> None:
    v1, v2, v3 = versions
    code, out = invoke("artifacts", "alias", "make.output@production", "make.output~2", "--reason", "ship it")
    assert code == 0 and "(unset) ->" in out and v1.split(":")[1][:12] in out
    code, out = invoke("artifacts", "alias", "make.output@production", "count.output")
    assert code == 1 and "pass --force" in out and len(out.strip().splitlines()) == 1
    code, out = invoke("artifacts", "alias", "make.output@production", "count.output", "--force", "--json")
    assert code == 0 and json.loads(out)["forced"] is True
    code, out = invoke("rollback", "make.output@production", "--reason", "wrong artifact")
    assert code == 0 and "[rollback]" in out
    code, out = invoke("artifacts", "show", "make.output@production", "--json")
    assert json.loads(out)["artifact"]["content_hash"] == v1
    code, out = invoke("rollback", "make.output@production")
    assert code == 1 and "no previous target" in out and len(out.strip().splitlines()) == 1
    code, out = invoke("rollback", "make.output@production", "--to", "make.output", "--json")
    assert code == 0 and json.loads(out)["to_hash"] == v3

    code, out = invoke("artifacts", "history", "make.output@production", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["action"] for r in rows] == ["set", "set", "rollback", "rollback"]
    assert rows[0]["via"] == "cli" and rows[0]["reason"] == "ship it" and rows[1]["forced"] is True
    assert {"from_hash", "to_hash", "user", "host", "changed_at"} <= set(rows[0])
    code, out = invoke("artifacts", "history", "make.output@production")
    assert code == 0 and "ship it" in out and "wrong artifact" in out and "cli" in out
    code, out = invoke("artifacts", "history", "make.output@nothing")
    assert code == 1 and "has never been set" in out

    # the names `artifacts list` prints are ids `artifacts show` accepts
    code, out = invoke("artifacts", "list", "--name", "make.output", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["content_hash"] for r in rows] == [v3, v2, v1]
    assert [r["id"] for r in rows] == ["make.output", "make.output~1", "make.output~2"]
    assert [r["version"] for r in rows] == [3, 2, 1]
    assert [r["used_by"] for r in rows] == [2, 4, 2]  # produced + consumed (v2 twice: its second run hit)
    assert rows[0]["aliases"] == ["production"]
    for row in rows:
        code, out = invoke("artifacts", "show", row["id"], "--json")
        assert code == 0 and json.loads(out)["artifact"]["content_hash"] == row["content_hash"]
    code, out = invoke("artifacts", "show", "make.output~1")
    assert code == 0 and "version 2 of 3" in out and "make.output" in out
    code, out = invoke("artifacts", "list", "--json")
    all_rows = json.loads(out)
    assert {(r["name"], r["content_hash"]) for r in all_rows} >= {("make.output", v) for v in versions}
    assert len({(r["name"], r["content_hash"]) for r in all_rows}) == len(all_rows) == 6
    code, out = invoke("artifacts", "list")
    assert code == 0 and "make.output" in out and "used by" in out
    code, out = invoke("artifacts", "list", "--by-run", "--json")
    assert code == 0 and len(json.loads(out)) == 8  # one row per step run that produced or reused a version


@pytest.mark.parametrize(
    "args,expected",
    [
        (("artifacts", "show", "nope.output"), "no artifact named 'nope.output'"),
        (("artifacts", "show", "make.output~9"), "make.output has 3 version(s)"),
        (("artifacts", "show", "make.output@prod"), "no alias 'make.output@prod'"),
        (("artifacts", "alias", "make.output", "make.output"), "is not NAME@ALIAS"),
        (("artifacts", "alias", "make.output@prod", "zzz.output"), "no artifact named 'zzz.output'"),
        (("rollback", "make.output@prod"), "no alias make.output@prod to roll back"),
        (("rollback", "a b@prod"), "no spaces"),
        (("artifacts", "history", "x" * 3000), "is not NAME@ALIAS"),
    ],
)
def test_unknown_ids_are_one_line_errors(versions: list[str], args: tuple[str, ...], expected: str) -> None:
    code, out = invoke(*args)
    assert code == 1 and expected in out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out and len(out) < 400


def test_a_store_from_revision_0003_keeps_its_aliases_history_starts_there(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    database = sa.engine.make_url(store_url).database
    if store_url.startswith("sqlite") and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(metadata_module._MIGRATIONS))
    h1, h2 = "blake3:" + "1" * 64, "blake3:" + "2" * 64
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.execute(
            sa.text(
                "INSERT INTO artifact_aliases (name, alias, content_hash, updated_at) "
                "VALUES ('train.output', 'prod', :h, CURRENT_TIMESTAMP)"
            ),
            {"h": h1},
        )
        conn.commit()
    engine.dispose()
    store = MetadataStore(store_url)
    try:
        with store.engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == metadata_module.SCHEMA_HEAD
            )
        client = Client(store)
        (seeded,) = client.alias_history("train.output@prod")
        assert (seeded.from_hash, seeded.to_hash, seeded.via) == (None, h1, "migration")
        # the versions exist now; the alias moves and rolls back to where it pointed before the upgrade
        run_id = str(uuid.uuid4())
        store.create_pipeline_run({"id": run_id, "pipeline": "p", "orchestrator": "local", "params": {}})
        for h in (h1, h2):
            sid = start_train_run(store, pipeline_run_id=run_id)
            finish_train_run(store, sid, h)
        client.promote("train.output@prod", "train.output")
        assert client.rollback("train.output@prod").to_hash == h1
        assert client.artifact("train.output~1").content_hash == h1
        assert store.get_step_run(sid)["invalidated_at"] is None
    finally:
        store.dispose()


def test_a_change_made_meanwhile_is_not_overwritten(versions: list[str]) -> None:
    from isthmus.store.metadata import AliasMoved

    client = Client()
    client.promote("make.output@production", versions[0])
    with pytest.raises(AliasMoved, match="make.output@production was changed by someone else meanwhile"):
        client.metadata.set_alias("make.output", "production", versions[1], expect_from=versions[2])
    assert client.artifact("make.output@production").content_hash == versions[0]
    assert len(client.alias_history("make.output@production")) == 1


def test_cli_aliases_belong_to_a_project(versions: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.governance import roles
    from isthmus.governance.roles import Role

    v1, v2, v3 = versions
    code, out = invoke("artifacts", "alias", "make.output@production", v1, "--project", "team-a")
    assert code == 0 and "(team-a)" in out
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-b")
    code, out = invoke("artifacts", "alias", "make.output@production", v2, "--json")
    assert code == 0 and json.loads(out)["project"] == "team-b"
    code, out = invoke("artifacts", "alias", "make.output@production", v3)  # team-b again, by the setting
    assert code == 0
    # one name, two aliases: each project's moves alone
    code, out = invoke("artifacts", "show", "make.output@production", "--json")
    assert json.loads(out)["artifact"]["content_hash"] == v3
    code, out = invoke("artifacts", "show", "make.output@production", "--project", "team-a", "--json")
    assert json.loads(out)["artifact"]["content_hash"] == v1
    code, out = invoke("rollback", "make.output@production", "--json")
    assert code == 0 and (json.loads(out)["project"], json.loads(out)["to_hash"]) == ("team-b", v2)
    code, out = invoke("rollback", "make.output@production", "--project", "team-a")
    assert code == 1 and "no previous target" in out  # team-a's alias was set once
    code, out = invoke("artifacts", "history", "make.output@production", "--project", "team-a", "--json")
    assert [(r["project"], r["to_hash"]) for r in json.loads(out)] == [("team-a", v1)]
    code, out = invoke("artifacts", "history", "make.output@production", "--json")
    assert [r["to_hash"] for r in json.loads(out)] == [v2, v3, v2]
    code, out = invoke("artifacts", "history", "make.output@production", "--project", "nobody")
    assert code == 1 and "never been set in project 'nobody'" in out and "--project nobody" in out
    code, out = invoke("artifacts", "aliases", "--json")
    assert sorted((r["project"], r["content_hash"]) for r in json.loads(out)) == [("team-a", v1), ("team-b", v2)]
    code, out = invoke("artifacts", "aliases", "--project", "team-a", "--json")
    assert [r["project"] for r in json.loads(out)] == ["team-a"]
    code, out = invoke("artifacts", "list", "--name", "make.output", "--json")  # the aliases of team-b
    assert [r["aliases"] for r in json.loads(out)] == [[], ["production"], []]
    code, out = invoke("lineage", "make.output@production", "--project", "team-a", "--json")
    assert code == 0 and json.loads(out)["target"]["id"] == v1
    code, out = invoke("artifacts", "alias", "make.output@production", v1, "--project", "bad project!")
    assert code == 1 and "project='bad project!' is not a project name" in out
    # the role check of a change is made in the alias's project; the audit entry carries it
    store = Client().metadata
    roles.grant(store, "someone-else", Role.ADMIN, by="test")
    roles.grant(store, roles.os_user(), Role.OPERATOR, "team-b", by="test")
    code, out = invoke("artifacts", "alias", "make.output@production", v3, "--project", "team-a")
    assert code == 1 and "has no role in project 'team-a'" in out
    assert Client().artifact("make.output@production", project="team-a").content_hash == v1
    code, out = invoke("artifacts", "alias", "make.output@production", v3, "--reason", "ours")
    assert code == 0, out
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-a")
    code, out = invoke("rollback", "make.output@production")
    assert code == 1 and "in project 'team-a'" in out
    code, out = invoke("rollback", "make.output@production", "--project", "team-b")
    assert code == 0 and "(team-b)" in out
    entries = [(e.action, e.project) for e in Client().audit_log() if e.action.startswith("alias.")]
    assert entries[:2] == [("alias.rollback", "team-b"), ("alias.promote", "team-b")]
    assert ("alias.promote", "team-a") in entries


def test_a_store_from_revision_0005_keeps_its_aliases_in_the_default_project(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    database = sa.engine.make_url(store_url).database
    if store_url.startswith("sqlite") and database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(metadata_module._MIGRATIONS))
    h1, h2 = "blake3:" + "1" * 64, "blake3:" + "2" * 64
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.execute(
            sa.text(
                "INSERT INTO artifact_aliases (name, alias, content_hash, updated_at) "
                "VALUES ('train.output', 'prod', :h, CURRENT_TIMESTAMP)"
            ),
            {"h": h1},
        )
        conn.execute(
            sa.text(
                "INSERT INTO artifact_alias_history (name, alias, action, to_hash, forced, via, changed_at) "
                "VALUES ('train.output', 'prod', 'set', :h, false, 'cli', CURRENT_TIMESTAMP)"
            ),
            {"h": h1},
        )
        conn.commit()
    engine.dispose()
    store = MetadataStore(store_url)
    try:
        client = Client(store)
        ((project, name, alias, target),) = [
            (a["project"], a["name"], a["alias"], a["content_hash"]) for a in client.aliases()
        ]
        assert (project, name, alias, target) == ("default", "train.output", "prod", h1)
        (kept,) = client.alias_history("train.output@prod", project="default")
        assert (kept.project, kept.to_hash, kept.via) == ("default", h1, "cli")
        # the same name@alias in another project is another alias, with its own history
        store.set_alias("train.output", "prod", h2, project="team-b")
        store.set_alias("train.output", "prod", h1, project="team-b")
        assert [c.to_hash for c in client.alias_history("train.output@prod", project="team-b")] == [h2, h1]
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT project, content_hash FROM artifact_aliases ORDER BY project")).all()
        assert [tuple(r) for r in rows] == [("default", h1), ("team-b", h1)]
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:  # (project, name, alias) is the key
            conn.execute(
                sa.text(
                    "INSERT INTO artifact_aliases (project, name, alias, content_hash, updated_at) "
                    "VALUES ('team-b', 'train.output', 'prod', :h, CURRENT_TIMESTAMP)"
                ),
                {"h": h2},
            )
    finally:
        store.dispose()


@step
def greet(text: str) -> int:
    return len(text)


@pipeline
def greeting(text: str = "hi"):
    return greet(text)


def test_recorded_text_never_reaches_the_terminal_as_control_characters(versions: list[str]) -> None:
    """A parameter, an alias reason or an id holding terminal controls (a window title, a colour, a screen
    clear, a carriage return) is printed as escapes by every command, never as the controls themselves."""
    hostile = "b\x1b]0;PWNED\x07\x1b[31mred\x1b[2J\rover\x9b"
    greeting.run(text="a")
    greeting.run(text=hostile)
    assert invoke("artifacts", "alias", "make.output@prod", versions[0], "--reason", hostile)[0] == 0
    outputs = [
        invoke("why", "latest:greet"),
        invoke("runs", "show", "latest"),
        invoke("diff", "--last", "greeting"),
        invoke("artifacts", "history", "make.output@prod"),
        invoke("artifacts", "show", hostile),
        invoke("rerun", hostile),
    ]
    for _code, out in outputs:
        assert not any(c in out for c in "\x1b\x07\r\x9b"), out
    assert all("\\x1b" in out for _, out in outputs), outputs


def test_artifacts_list_ids_name_exactly_the_version_of_their_row(versions: list[str]) -> None:
    """Without --name, each row's id (NAME, NAME~1, …) and version number name that row's version, as
    ``artifacts show`` resolves them; an empty listing says what was looked for."""
    client = Client()
    rows = client.artifact_versions(limit=50)
    made = [r for r in rows if r["name"] == "make.output"]
    assert [r["content_hash"] for r in made] == versions[::-1]
    for r in rows:
        assert client.artifact(r["id"]).content_hash == r["content_hash"], r["id"]
    named = client.artifact_versions(name="make.output")  # numbered with --name
    assert [r["id"] for r in named] == ["make.output", "make.output~1", "make.output~2"]
    for r in named:
        shown = client.artifact(r["id"])
        assert (shown.content_hash, shown.number) == (r["content_hash"], r["version"]), r["id"]
        (same,) = [m for m in made if m["content_hash"] == r["content_hash"]]
        assert (same["first_produced"], same["last_produced"]) == (r["first_produced"], r["last_produced"])
    code, out = invoke("artifacts", "list", "--name", "nosuch.output")
    assert code == 0 and "no versions of 'nosuch.output' recorded" in out
    code, out = invoke("artifacts", "history", "make.output@nosuch", "--json")
    assert code == 1 and "has never been set" in out
    code, out = invoke("artifacts", "alias", "make.output@~1", versions[0])
    assert code == 1 and "an alias holds no '~' or ':'" in out


@step
def first_of(a: int) -> int:
    return a


@step
def second_of(b: int) -> int:
    return b


@pipeline
def two_names(a: int = 1, b: int = 2):
    return first_of(a), second_of(b)


def test_versions_are_numbered_by_when_they_first_appeared_under_their_name() -> None:
    """Content stored first under another name (a's 1 before b ever produced 1) is numbered, for b, by
    when b first produced it: b's newest version is the one b produced last, first."""
    two_names.run(a=1, b=2)
    second = two_names.run(a=2, b=1).steps["second_of"].outputs["output"].content_hash
    assert two_names.run(a=3, b=1).steps["second_of"].cache_hit
    client = Client()
    newest = client.artifact("second_of.output")
    assert newest.content_hash == second and (newest.number, newest.versions) == (2, 2)
    rows = client.artifact_versions(name="second_of.output")
    assert [r["id"] for r in rows] == ["second_of.output", "second_of.output~1"]
    assert rows[0]["content_hash"] == second and rows[0]["first_produced"] > rows[1]["first_produced"]
    assert invoke("artifacts", "alias", "second_of.output@prod", "second_of.output")[0] == 0
    assert client.artifact("second_of.output@prod").content_hash == second


def test_a_few_versions_are_found_as_the_whole_ranking_finds_them(versions: list[str]) -> None:
    """``NAME~N`` and short pages take a cheaper query than the ranking of every version; both give the
    same versions, numbers, totals, times and deleted counts — with a version reused later (a cache hit),
    one produced first under another name, and one deleted by gc."""
    from isthmus import artifact_ids

    two_names.run(a=1, b=2)
    two_names.run(a=2, b=1)
    two_names.run(a=3, b=1)
    meta = Client().metadata
    meta.forget_artifacts([versions[0]])  # make.output~2 deleted (gc): numbers count stored versions

    def found(window: int) -> list[list[artifact_ids.VersionStats]]:
        artifact_ids._WINDOW = window
        try:
            return [
                artifact_ids.versions_of(meta, name, back=back, limit=limit)
                for name in ("make.output", "second_of.output", "first_of.output", "nothing.output")
                for back in range(4)
                for limit in (0, 1, 2, 5)
            ]
        finally:
            artifact_ids._WINDOW = 100

    cheap, whole = found(100), found(-1)
    assert cheap == whole and any(cheap)
    newest = cheap[1]  # make.output, back 0, limit 1
    assert [v.content_hash for v in newest] == [versions[2]] and (newest[0].number, newest[0].deleted) == (2, 1)
