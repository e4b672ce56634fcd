"""``rollback --to`` accepts every earlier target of the alias, a forced one (a version of another name)
included, also after a rollback stepped off it; a refusal names fixes the rollback command has."""

from __future__ import annotations

import json

import pytest

from isthmus import Client
from isthmus.aliases import AliasRefused
from tests.core import gc_steps as g
from tests.helpers import invoke


@pytest.fixture
def hashes() -> dict[str, str]:
    """Two versions of make.output and versions of count.output (another name)."""
    first, second = g.chain.run(n=3), g.chain.run(n=4)
    return {
        "v1": first.steps["make"].outputs["output"].content_hash,
        "v2": second.steps["make"].outputs["output"].content_hash,
        "c1": first.steps["count"].outputs["output"].content_hash,
        "c2": second.steps["count"].outputs["output"].content_hash,
    }


def test_rollback_to_a_forced_earlier_target_after_stepping_off_it(hashes: dict[str, str]) -> None:
    client = Client()
    client.promote("make.output@staging", hashes["v1"])
    client.promote("make.output@staging", hashes["c1"], force=True, reason="try the count")
    assert client.rollback("make.output@staging").to_hash == hashes["v1"]  # steps off the forced target
    back = client.rollback("make.output@staging", to=hashes["c1"].split(":")[1][:8])
    assert (back.action, back.from_hash, back.to_hash) == ("rollback", hashes["v1"], hashes["c1"])
    assert client.artifact("make.output@staging").content_hash == hashes["c1"]


def test_rollback_refuses_a_foreign_version_that_was_never_a_target_without_naming_force(
    hashes: dict[str, str],
) -> None:
    client = Client()
    client.promote("make.output@staging", hashes["v1"])
    client.promote("make.output@staging", hashes["v2"])
    with pytest.raises(AliasRefused) as info:
        client.rollback("make.output@staging", to=hashes["c2"])
    message = str(info.value)
    assert "not a version of make.output nor an earlier target of make.output@staging" in message
    assert "pass --force" not in message and "artifacts history make.output@staging" in message
    assert "'isthmus artifacts alias make.output@staging VERSION --force'" in message
    assert client.artifact("make.output@staging").content_hash == hashes["v2"]


def test_cli_rollback_to_a_forced_earlier_target(hashes: dict[str, str]) -> None:
    c1 = hashes["c1"].split(":")[1][:8]
    assert invoke("artifacts", "alias", "make.output@staging", hashes["v1"])[0] == 0
    assert invoke("artifacts", "alias", "make.output@staging", c1, "--force")[0] == 0
    assert invoke("rollback", "make.output@staging")[0] == 0
    code, out = invoke("rollback", "make.output@staging", "--to", c1, "--json")
    assert code == 0 and json.loads(out)["to_hash"] == hashes["c1"]
    code, out = invoke("rollback", "make.output@staging", "--to", hashes["c2"])
    assert code == 1 and len(out.strip().splitlines()) == 1 and "pass --force" not in out
    assert "earlier target" in out
