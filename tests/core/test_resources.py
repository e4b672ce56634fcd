"""Resources and CachePolicy: parsing, and clear errors at definition time."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isthmus
from isthmus import CachePolicy, Resources, StepDefinitionError
from isthmus.resources import format_memory, parse_duration, parse_memory

fast = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)

GI = 1024**3


# -- Resources -----------------------------------------------------------------------------------------


def test_full_resources() -> None:
    r = Resources(
        cpu=2,
        memory="4Gi",
        gpu=1,
        gpu_type="A100",
        time_limit="2h",
        partition="gpu",
        account="proj",
        qos="high",
        node_selector={"zone": "a"},
    )
    assert r.cpu == 2.0
    assert r.memory == 4 * GI
    assert (r.gpu, r.gpu_type) == (1, "A100")
    assert r.time_limit == 7200.0
    assert r.partition == r.queue == "gpu"
    assert (r.account, r.qos) == ("proj", "high")
    assert r.node_selector == {"zone": "a"}
    assert r.to_dict() == {
        "cpu": 2.0,
        "memory": 4 * GI,
        "gpu": 1,
        "gpu_type": "A100",
        "time_limit": 7200.0,
        "partition": "gpu",
        "account": "proj",
        "qos": "high",
        "node_selector": {"zone": "a"},
    }


def test_defaults_and_to_dict_only_keeps_what_was_set() -> None:
    r = Resources()
    assert (r.cpu, r.memory, r.gpu, r.time_limit, r.partition) == (None, None, 0, None, None)
    assert r.to_dict() == {}
    assert Resources(cpu=0.5).to_dict() == {"cpu": 0.5}


def test_queue_is_an_alias_of_partition() -> None:
    assert Resources(queue="celery").partition == "celery"
    assert Resources(queue="q", partition="q").partition == "q"
    with pytest.raises(StepDefinitionError, match="give one of them"):
        Resources(queue="a", partition="b")


def test_cpu_forms() -> None:
    assert Resources(cpu="500m").cpu == 0.5
    assert Resources(cpu="2").cpu == 2.0
    assert Resources(cpu=0.25).cpu == 0.25


def test_resources_is_frozen() -> None:
    r = Resources(cpu=1)
    with pytest.raises(pydantic.ValidationError):
        r.cpu = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4Gi", 4 * GI),
        ("512M", 512 * 10**6),
        ("512Mi", 512 * 1024**2),
        ("2G", 2 * 10**9),
        ("1.5Gi", 3 * GI // 2),
        ("1Ti", 1024**4),
        ("100K", 100_000),
        ("8Ki", 8192),
        ("4gi", 4 * GI),
        ("4.35G", 4_350_000_000),  # exact, no float rounding
        ("1024", 1024),
        (1024, 1024),
        (4 * GI, 4 * GI),
        (1.5, 2),  # fractions of a byte round up
    ],
)
def test_memory_parsing(text: Any, expected: int) -> None:
    assert parse_memory(text) == expected
    assert Resources(memory=text).memory == expected


@fast
@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"]))
def test_memory_units_property(n: int, unit: str) -> None:
    factor = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    assert parse_memory(f"{n}{unit}") == n * factor[unit]


@fast
@given(st.integers(min_value=1, max_value=2**50))
def test_format_memory_round_trips(n: int) -> None:
    assert parse_memory(format_memory(n)) == n


@pytest.mark.parametrize(
    "value", ["4GB", "4 GB", "4 Gi", "abc", "", "4Gib", "-4Gi", "4Gi ", " 4Gi", "4Gi\n", "Gi", "1e9"]
)
def test_invalid_memory_strings_are_rejected_with_the_value_and_a_fix(value: str) -> None:
    with pytest.raises(StepDefinitionError) as info:
        Resources(memory=value)
    message = str(info.value)
    assert repr(value) in message
    assert "4Gi" in message or "4G" in message


def test_memory_gb_suffix_explains_the_units() -> None:
    with pytest.raises(StepDefinitionError, match=r"'4GB'.*'4G'.*'4Gi'"):
        Resources(memory="4GB")


@pytest.mark.parametrize("value", [-1, 0, -0.5, float("nan"), float("inf"), True])
def test_invalid_memory_numbers(value: Any) -> None:
    with pytest.raises(StepDefinitionError, match="memory"):
        Resources(memory=value)


@pytest.mark.parametrize("value", [-1, 0, -0.5, float("nan"), float("inf"), "abc", "-2", True, [1]])
def test_invalid_cpu(value: Any) -> None:
    with pytest.raises(StepDefinitionError) as info:
        Resources(cpu=value)
    message = str(info.value)
    assert "cpu" in message
    assert "cpu=2" in message or "cpu=0.5" in message or "cpu=" in message


@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
def test_invalid_gpu(value: Any) -> None:
    with pytest.raises(StepDefinitionError, match=r"gpu=.*gpu=1"):
        Resources(gpu=value)


def test_gpu_type_without_gpu() -> None:
    with pytest.raises(StepDefinitionError) as info:
        Resources(gpu_type="A100")
    message = str(info.value)
    assert "'A100'" in message and "gpu=1" in message
    assert not message.startswith("invalid Resources: :")


def test_unknown_field_lists_the_known_ones() -> None:
    with pytest.raises(StepDefinitionError) as info:
        Resources(cpus=2)
    message = str(info.value)
    assert "cpus" in message
    assert "cpu" in message.split("cpus", 1)[1]
    assert "memory" in message and "queue" in message


def test_wrong_types_name_the_value() -> None:
    with pytest.raises(StepDefinitionError, match=r"partition=5"):
        Resources(partition=5)
    with pytest.raises(StepDefinitionError, match=r"node_selector"):
        Resources(node_selector={"zone": 1})


def test_invalid_time_limit() -> None:
    with pytest.raises(StepDefinitionError, match=r"time_limit.*'soon'.*1h30m"):
        Resources(time_limit="soon")
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(StepDefinitionError, match="time_limit"):
            Resources(time_limit=bad)


def test_coerce() -> None:
    r = Resources(cpu=1)
    assert Resources.coerce(r) is r
    assert Resources.coerce(None) == Resources()
    assert Resources.coerce({"cpu": 2, "memory": "1Gi"}) == Resources(cpu=2, memory=GI)
    with pytest.raises(StepDefinitionError, match="Resources"):
        Resources.coerce("2 cpus")  # type: ignore[arg-type]


# -- durations -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("1h30m", 5400),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1.5h", 5400),
        ("2H", 7200),
        ("02:00:00", 7200),
        ("1-00:00:00", 86400),
        ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("30:00", 1800),  # Slurm: MM:SS
        ("1-12", 86400 + 12 * 3600),  # Slurm: D-HH
        ("2-06:30", 2 * 86400 + 6 * 3600 + 30 * 60),  # Slurm: D-HH:MM
        (90, 90),
        (1.5, 1.5),
        (0, 0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "90", "1h 30m", "5ms", "1:2:3:4", "h", "-5s", "1--2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"1h30m"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), True, None])
def test_parse_duration_rejects_numbers(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@fast
@given(st.integers(0, 400), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_duration_forms_agree(d: int, h: int, m: int, s: int) -> None:
    total = d * 86400 + h * 3600 + m * 60 + s
    assert parse_duration(f"{d}-{h:02d}:{m:02d}:{s:02d}") == total
    assert parse_duration(f"{d}d{h}h{m}m{s}s") == total
    assert parse_duration(f"{d * 24 + h}:{m:02d}:{s:02d}") == total


# -- Resources on steps -------------------------------------------------------------------------------


def test_invalid_resources_fail_where_the_step_is_defined() -> None:
    # Resources(...) validates itself, so the error is raised on the decorator line.
    with pytest.raises(StepDefinitionError, match=r"'4 GB'"):

        @isthmus.step(resources=Resources(memory="4 GB"))
        def train(x: int) -> int:
            return x


def test_invalid_resources_dict_names_the_step() -> None:
    with pytest.raises(StepDefinitionError) as info:

        @isthmus.step(resources={"memory": "4 GB"})
        def train(x: int) -> int:
            return x

    message = str(info.value)
    assert "'train'" in message and "'4 GB'" in message and "4Gi" in message


def test_valid_resources_on_a_step() -> None:
    @isthmus.step(resources=Resources(cpu=2, memory="2Gi"))
    def fit(x: int) -> int:
        return x

    assert fit.resources.memory == 2 * GI
    assert fit(3) == 3


# -- CachePolicy -------------------------------------------------------------------------------------


def test_cache_policy_defaults_and_to_dict() -> None:
    p = CachePolicy()
    assert p.to_dict() == {
        "enabled": True,
        "code": True,
        "deps": "imports",
        "ignore_inputs": [],
        "expires_after": None,
        "version": "",
    }
    assert CachePolicy.disabled().enabled is False
    assert CachePolicy.coerce(None) == CachePolicy.coerce(True) == CachePolicy()
    assert CachePolicy.coerce(False) == CachePolicy.disabled()
    assert CachePolicy.coerce(p) is p
    assert hash(CachePolicy()) == hash(CachePolicy())  # usable as a dict key
    with pytest.raises(StepDefinitionError, match="cache="):
        CachePolicy.coerce("yes")  # type: ignore[arg-type]


def test_cache_policy_deps() -> None:
    assert CachePolicy(deps="all").deps == "all"
    assert CachePolicy(deps=None).deps is None
    assert CachePolicy(deps=["pandas", "numpy", "pandas"]).deps == ("numpy", "pandas")
    assert CachePolicy(deps=("b", "a")) == CachePolicy(deps=["a", "b"])
    for bad in ("everything", "numpy", ["numpy", 1], [""], 123):
        with pytest.raises(StepDefinitionError, match=r"deps=.*'imports'"):
            CachePolicy(deps=bad)  # type: ignore[arg-type]


def test_cache_policy_expires_after() -> None:
    assert CachePolicy(expires_after="7d").expires_after == 7 * 86400
    assert CachePolicy(expires_after="12h").expires_after == 12 * 3600
    assert CachePolicy(expires_after=60).expires_after == 60.0
    for bad in ("soon", -5, "7 days"):
        with pytest.raises(StepDefinitionError, match=r"expires_after.*7d"):
            CachePolicy(expires_after=bad)


def test_cache_policy_ignore_inputs() -> None:
    assert CachePolicy(ignore_inputs="verbose").ignore_inputs == ("verbose",)
    assert CachePolicy(ignore_inputs=None).ignore_inputs == ()  # type: ignore[arg-type]
    assert CachePolicy(ignore_inputs=["b", "a", "b"]).ignore_inputs == ("a", "b")
    assert CachePolicy(ignore_inputs=["a", "b"]) == CachePolicy(ignore_inputs=["b", "a"])
    for bad in ([1], ["not a name"], [""]):
        with pytest.raises(StepDefinitionError, match="ignore_inputs"):
            CachePolicy(ignore_inputs=bad)  # type: ignore[arg-type]


def test_ignore_inputs_must_name_parameters_of_the_step() -> None:
    @isthmus.step(cache=CachePolicy(ignore_inputs=["verbose"]))
    def ok(x: int, verbose: bool = False) -> int:
        return x

    assert ok.cache.ignore_inputs == ("verbose",)

    with pytest.raises(StepDefinitionError) as info:

        @isthmus.step(cache=CachePolicy(ignore_inputs=["verbos"]))
        def typo(x: int, verbose: bool = False) -> int:
            return x

    message = str(info.value)
    assert "'typo'" in message and "verbos" in message and "verbose" in message


def test_cache_policy_version_and_code() -> None:
    p = CachePolicy(code=False, version=3)  # type: ignore[arg-type]
    assert (p.code, p.version) == (False, "3")
    assert CachePolicy(version=None).version == ""  # type: ignore[arg-type]
    assert CachePolicy(version="a") != CachePolicy(version="b")
