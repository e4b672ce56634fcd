"""Steps the Kubernetes tests build pods for (importable by path: the pod imports this module)."""

from __future__ import annotations

from isthmus import Resources, step


@step(resources=Resources(cpu=0.5, memory="256Mi", time_limit="10m"))
def make_numbers(n: int) -> list[int]:
    return [i * i for i in range(n)]


@step(
    resources=Resources(
        cpu=4,
        memory="16Gi",
        gpu=2,
        gpu_type="NVIDIA-A100-SXM4-80GB",
        time_limit="2h",
        node_selector={"pool": "gpu"},
        extra={
            "tolerations": "nvidia.com/gpu:NoSchedule,team=ml:NoExecute",
            "service_account": "trainer",
            "ephemeral_storage": "20Gi",
        },
    )
)
def train_on_gpu(numbers: list[int], scale: int = 2) -> dict:
    return {"total": sum(numbers) * scale, "count": len(numbers)}


@step
def explode(message: str) -> int:
    raise ValueError(f"boom: {message}")
