"""Every Job/pod phase and reason, from recorded API objects (tests/k8s/api_objects/*.json), to one state.

Each object is first checked to be what the API server returns: it validates against the official
OpenAPI schema (strict: no unknown field) and survives a round trip through the ``kubernetes`` client's
own models (``V1Job``/``V1Pod``) unchanged, which is also the path the executor's objects take."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from isthmus.k8s.executor import api_dict, api_model
from isthmus.k8s.states import FAILED, SUCCESS, TRANSIENT, is_terminal, job_state
from tests.k8s.conftest import SCHEMA_VERSIONS

OBJECTS = sorted((Path(__file__).parent / "api_objects").glob("*.json"))


def _model(data: dict[str, Any], kind: str) -> Any:
    """``data`` as the client's model, deserialized exactly as the client does an API response."""
    return api_model(data, kind)


def _normalized(value: Any) -> Any:
    """Timestamps as datetimes (the API writes 'Z', the client '+00:00'); empty values dropped."""
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value


@pytest.mark.parametrize("path", OBJECTS, ids=[p.stem for p in OBJECTS])
def test_recorded_objects_are_real_api_shapes(path: Path) -> None:
    import kubernetes_validate

    case = json.loads(path.read_text())
    for obj, kind in [(case["job"], "V1Job"), *[(p, "V1Pod") for p in case["pods"]]]:
        for version in (SCHEMA_VERSIONS[0], SCHEMA_VERSIONS[-1]):
            kubernetes_validate.validate(obj, version, strict=True)
        assert _normalized(api_dict(_model(obj, kind))) == _normalized(obj)


@pytest.mark.parametrize("path", OBJECTS, ids=[p.stem for p in OBJECTS])
def test_each_phase_and_reason_maps_to_one_state(path: Path) -> None:
    case = json.loads(path.read_text())
    expect = case["expect"]
    for job, pods in [
        (case["job"], case["pods"]),
        (api_dict(_model(case["job"], "V1Job")), [api_dict(_model(p, "V1Pod")) for p in case["pods"]]),
    ]:
        status = job_state(job, pods)
        assert (status.state, status.reason) == (expect["state"], expect["reason"]), case["description"]
        assert status.success == (expect["state"] == "SUCCEEDED")
        assert status.job_name == case["job"]["metadata"]["name"]


def test_the_cases_cover_every_state_but_the_ones_isthmus_sets_itself() -> None:
    seen = {json.loads(p.read_text())["expect"]["state"] for p in OBJECTS}
    assert seen == (SUCCESS | TRANSIENT | FAILED) - {"LOST", "CANCELLED"}
    lost = job_state(None, job_name="gone")
    assert (lost.state, lost.terminal, lost.success) == ("LOST", True, False)


def test_pod_details_are_kept_for_the_error_message() -> None:
    case = json.loads((Path(__file__).parent / "api_objects" / "oom_killed.json").read_text())
    status = job_state(case["job"], case["pods"])
    assert (status.exit_code, status.node, status.pod_name.endswith("-x7k2p")) == (137, "gpu-node-3", True)
    assert status.retryable is False
    evicted = json.loads((Path(__file__).parent / "api_objects" / "evicted.json").read_text())
    assert job_state(evicted["job"], evicted["pods"]).retryable is True


_PHASES = st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown", "", "Completed", "Weird"])
_REASONS = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["Evicted", "OOMKilled", "Completed"]))
_CONDITION = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget", "Suspended", "Other"]),
        "status": st.sampled_from(["True", "False", "Unknown"]),
    }
)


@given(
    phase=_PHASES,
    reason=_REASONS,
    conditions=st.lists(_CONDITION, max_size=3),
    waiting=st.one_of(st.none(), st.text(max_size=30)),
)
def test_only_a_complete_job_is_ever_success(
    phase: str, reason: str | None, conditions: list, waiting: str | None
) -> None:
    pod: dict[str, Any] = {"metadata": {"name": "p"}, "status": {"phase": phase, "reason": reason}}
    if waiting is not None:
        pod["status"]["containerStatuses"] = [{"name": "primary", "state": {"waiting": {"reason": waiting}}}]
    status = job_state({"metadata": {"name": "j"}, "status": {"conditions": conditions}}, [pod])
    complete = any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
    assert status.success == complete
    assert status.state in SUCCESS | TRANSIENT | FAILED
    assert is_terminal(status.state) or status.state in TRANSIENT
