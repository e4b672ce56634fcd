"""What a step's Resources, time limit and cache policy become in the serialized Flyte task template."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict

import pytest
from flytekit import Cache, Resources, task
from flytekit.configuration import Image, ImageConfig, SerializationSettings
from flytekit.core.cache import VersionParameters
from flytekit.extras import accelerators
from flytekit.tools.translator import get_serializable

from flytekitplugins.isthmus import Isthmus, IsthmusCachePolicy, isthmus_task
from flytekitplugins.isthmus.resources import accelerator_for, parse_tolerations
from isthmus import step
from isthmus.errors import StepDefinitionError
from tests.flyte import flyte_steps as fs

SETTINGS = SerializationSettings(
    project="proj",
    domain="development",
    version="v1",
    image_config=ImageConfig(default_image=Image(name="default", fqn="isthmus-example", tag="1")),
    env={},
)


def _template(t):
    return get_serializable(OrderedDict(), SETTINGS, t).template


def _resources(entries) -> dict[str, str]:
    return {e.name: e.value for e in entries}


def test_requests_and_limits_are_both_set_and_gpu_type_maps_to_an_accelerator() -> None:
    tpl = _template(isthmus_task(fs.plain_gpu_step))
    assert tpl.type == "python-task"
    res = tpl.container.resources
    assert _resources(res.requests) == _resources(res.limits)
    # flytekit's enum names: CPU=1, GPU=2, MEMORY=3
    assert set(_resources(res.requests).values()) == {"2", "1", "512Mi"}
    assert tpl.extended_resources.gpu_accelerator.device == "nvidia-tesla-t4"
    assert tpl.k8s_pod is None


def test_node_selector_and_tolerations_go_to_the_pod_template() -> None:
    t = isthmus_task(fs.gpu_step, task_config=Isthmus(tolerations=[{"key": "spot", "operator": "Exists"}]))
    tpl = _template(t)
    assert tpl.container is None
    pod = tpl.k8s_pod.pod_spec
    (container,) = pod["containers"]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "3Gi", "gpu": "2"}
    assert container["resources"]["limits"] == container["resources"]["requests"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "spot", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
    ]
    assert tpl.extended_resources.gpu_accelerator.device == "nvidia-tesla-a100"
    assert tpl.metadata.timeout == dt.timedelta(hours=2)
    assert tpl.config == {"primary_container_name": "primary"}


def test_explicit_flytekit_settings_win() -> None:
    t = isthmus_task(
        fs.plain_gpu_step,
        requests=Resources(cpu="1", mem="1Gi"),
        limits=Resources(cpu="4", mem="8Gi"),
        accelerator=accelerators.L4,
        timeout=dt.timedelta(minutes=5),
    )
    tpl = _template(t)
    assert set(_resources(tpl.container.resources.requests).values()) == {"1", "1Gi"}
    assert set(_resources(tpl.container.resources.limits).values()) == {"4", "8Gi"}
    assert tpl.extended_resources.gpu_accelerator.device == "nvidia-l4"
    assert tpl.metadata.timeout == dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("name", "device", "partition"),
    [
        ("A100", "nvidia-tesla-a100", None),
        ("nvidia-tesla-v100", "nvidia-tesla-v100", None),
        ("A100-80GB", "nvidia-a100-80gb", None),
        ("h100", "nvidia-h100", None),
        ("A100:1g.5gb", "nvidia-tesla-a100", "1g.5gb"),
        ("amd-mi300x", "amd-mi300x", None),
    ],
)
def test_gpu_type_names(name: str, device: str, partition: str | None) -> None:
    idl = accelerator_for(name).to_flyte_idl()
    assert idl.device == device
    assert (idl.partition_size or None) == partition


def test_bad_tolerations_and_partitions_are_rejected() -> None:
    with pytest.raises(StepDefinitionError, match="toleration"):
        parse_tolerations("=x:NoSchedule")
    with pytest.raises(StepDefinitionError, match="MIG"):
        accelerator_for("T4:1g.5gb")


def _v1(x: int) -> int:
    return x + 1


def _v2(x: int) -> int:
    return x + 2


def test_cache_policy_version_follows_the_code_fingerprint() -> None:
    policy = IsthmusCachePolicy()
    a = policy.get_version("", VersionParameters(func=step(_v1, name="inc")))
    assert a == policy.get_version("", VersionParameters(func=step(_v1, name="inc")))
    assert a != policy.get_version("", VersionParameters(func=step(_v2, name="inc")))
    assert a != policy.get_version("salt", VersionParameters(func=step(_v1, name="inc")))

    cached = isthmus_task(step(_v1, name="inc"), cache=True)
    assert cached.metadata.cache and cached.metadata.cache_version
    assert isthmus_task(step(_v2, name="inc"), cache=True).metadata.cache_version != cached.metadata.cache_version
    assert not isthmus_task(step(_v1, name="inc")).metadata.cache  # by default only the isthmus cache


@task(task_config=Isthmus(), cache=Cache(policies=[IsthmusCachePolicy()]))
def cached_double(x: int) -> int:
    return 2 * x


def test_cache_policy_on_a_task_decorator() -> None:
    tpl = _template(cached_double)
    assert tpl.metadata.discoverable
    expected = Cache(policies=[IsthmusCachePolicy()]).get_version(VersionParameters(func=cached_double.task_function))
    assert tpl.metadata.discovery_version == expected


def test_steps_a_container_cannot_import_fail_at_serialization_with_the_fix() -> None:
    from isthmus.errors import NotImportableError

    def local_step(x: int) -> int:
        return x

    t = isthmus_task(local_step)
    assert t(x=2) == 2  # runs locally
    with pytest.raises(NotImportableError, match="move it to module level"):
        _template(t)


def test_pipeline_parameters_need_a_type() -> None:
    from isthmus import pipeline

    @pipeline
    def untyped(n):
        return fs.total(fs.make_numbers(n))

    with pytest.raises(StepDefinitionError, match="needs a type annotation"):
        untyped.to_flyte_workflow()


def test_pipeline_parameter_and_step_input_must_agree() -> None:
    from isthmus import pipeline

    @pipeline
    def mismatched(n: int = 3):
        return fs.halve(n)

    with pytest.raises(StepDefinitionError, match=r"parameter 'n' \(int\) is passed to step 'halve' as 'x'"):
        mismatched.to_flyte_workflow()
