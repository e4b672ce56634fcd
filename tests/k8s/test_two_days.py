"""The cache across fresh processes, as a user's two days: day one runs a step as a Kubernetes Job; day
two, in a new process, the same call creates nothing (a hit); after the step's source file is edited on
disk, a new process creates a Job again and gets the new result. (The cluster is the in-memory API of
tests/k8s/fake_api.py, in each process; the stores are the shared SQLite file and artifact directory.)"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_python, write_module

STEPS = """
from isthmus import Resources, step

@step(resources=Resources(cpu=1, memory="128Mi"))
def scale(x: int) -> int:
    return x * {factor}
"""

DAY = """
import json
from pathlib import Path
from isthmus.k8s import KubernetesJobExecutor
from tests.k8s.fake_api import FakeCluster
import user_steps

project = Path.cwd()
cluster = FakeCluster(workdir=project, image_paths=(str(project),))
ex = KubernetesJobExecutor(image="registry.example/p:1", batch_api=cluster, core_api=cluster, poll_interval=0.01)
result = ex.run(user_steps.scale, {"x": 7})
print(json.dumps({"calls": [c for c, _ in cluster.calls], "hit": result.cache_hit, "value": ex.runner.artifacts.load(result.outputs["output"]), "left": len(cluster.jobs) + len(cluster.secrets)}))
"""


def test_two_days_in_fresh_processes(isthmus_home: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    write_module(project, "user_steps", STEPS.format(factor=2))
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    day1 = run_python(DAY, env=env, cwd=project)
    assert day1 == {"calls": ["create_secret", "create_job"], "hit": False, "value": 14, "left": 0}
    day2 = run_python(DAY, env=env, cwd=project)
    assert day2 == {"calls": [], "hit": True, "value": 14, "left": 0}
    write_module(project, "user_steps", STEPS.format(factor=3))  # the user edits the step
    day3 = run_python(DAY, env=env, cwd=project)
    assert day3 == {"calls": ["create_secret", "create_job"], "hit": False, "value": 21, "left": 0}
