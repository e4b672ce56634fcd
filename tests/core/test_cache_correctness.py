"""A cache hit is never stale: every path the code can take, proven as days of a user's work.

A small project is written into ``tmp_path``; each "day" is a fresh Python process that runs every
step of it once (one process per day keeps the module fast). Day 1 computes, an unchanged day 1b hits,
day 2 follows edits on disk (source, data files, environment) and must recompute exactly the edited
cases with their new values, and an unchanged day 3 hits again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

PROJECT: dict[str, str] = {
    "cc_control.py": """
        from isthmus import step

        @step
        def control(x: int) -> int:
            return x + 7
    """,
    "cc_partial.py": """
        import functools
        from isthmus import step

        def twice(x):
            return x * 2

        def mul(k, x):
            return k * x

        def add(x, offset=0):
            return x + offset

        BY_FUNC = functools.partial(twice)
        BY_ARGS = functools.partial(mul, 2)
        BY_KEYWORDS = functools.partial(add, offset=1)

        @step
        def partial_func(x: int) -> int:
            return BY_FUNC(x)

        @step
        def partial_args(x: int) -> int:
            return BY_ARGS(x)

        @step
        def partial_keywords(x: int) -> int:
            return BY_KEYWORDS(x)
    """,
    "cc_containers.py": """
        from isthmus import step

        def double(x):
            return x * 2

        def unused_helper(x):
            return x

        def inc(x):
            return x + 1

        def half(x):
            return x // 2

        def square(x):
            return x * x

        OPS = {"double": double}
        CONF = {"helper": unused_helper, "offset": 1}
        PIPE = [inc, half]
        PAIR = (square, 5)

        @step
        def dict_fn(x: int) -> int:
            return OPS["double"](x)

        @step
        def dict_const(x: int) -> int:
            return x + CONF["offset"]

        @step
        def list_fn(x: int) -> int:
            for f in PIPE:
                x = f(x)
            return x

        @step
        def tuple_fn(x: int) -> int:
            return PAIR[0](x) + PAIR[1]
    """,
    "cc_local_imports.py": """
        from isthmus import step

        @step
        def from_import(x: int) -> int:
            from cc_local_helpers import triple
            return triple(x)

        @step
        def module_import(x: int) -> int:
            import cc_local_mod
            return cc_local_mod.quad(x)
    """,
    "cc_local_helpers.py": """
        def triple(x):
            return x * 3
    """,
    "cc_local_mod.py": """
        def quad(x):
            return x * 4
    """,
    "ccpkg/__init__.py": "",
    "ccpkg/steps.py": """
        from isthmus import step

        @step
        def relative_import(x: int) -> int:
            from .helpers import five
            return five(x)
    """,
    "ccpkg/helpers.py": """
        def five(x):
            return x * 5
    """,
    "cc_wrappers.py": """
        import functools
        from isthmus import step

        @functools.lru_cache(maxsize=None)
        def lru_double(x):
            return x * 2

        @functools.cache
        def cached_inc(x):
            return x + 1

        class Traced:
            def __init__(self, fn):
                self.__wrapped__ = fn

            def __call__(self, *args):
                return self.__wrapped__(*args)

        @Traced
        def traced_neg(x):
            return -x

        class Scaler:
            def __init__(self, k):
                self.k = k

            def __call__(self, x):
                return x * self.k

        SCALE = Scaler(3)

        @step
        def lru(x: int) -> int:
            return lru_double(x)

        @step
        def cache(x: int) -> int:
            return cached_inc(x)

        @step
        def wrapped(x: int) -> int:
            return traced_neg(x)

        @step
        def callable_instance(x: int) -> int:
            return SCALE(x)
    """,
    "cc_state.py": """
        import json
        import re
        import types
        from pathlib import Path
        from isthmus import step

        class Settings:
            def __init__(self, threshold, label):
                self.threshold = threshold
                self.label = label

            @classmethod
            def load(cls, path):
                return cls(**json.loads(Path(path).read_text()))

        class Model:
            __slots__ = ("weights",)

            def __init__(self):
                self.weights = [float(w) for w in Path("cc_weights.txt").read_text().split()]

            def predict(self, x):
                return sum(w * x for w in self.weights)

        class Doubler:
            def __init__(self):
                self.k = 2

            def apply(self, x):
                return x * self.k

        SETTINGS = Settings.load("cc_settings.json")
        MODEL = Model()
        PATTERN = re.compile(Path("cc_pattern.txt").read_text().strip())
        NS = types.SimpleNamespace(**json.loads(Path("cc_namespace.json").read_text()))
        DOUBLER = Doubler()

        @step
        def settings_state(x: float) -> str:
            return f"{SETTINGS.label}:{x > SETTINGS.threshold}"

        @step
        def model_state(x: float) -> float:
            return MODEL.predict(x)

        @step
        def pattern_state(text: str) -> int:
            return len(PATTERN.findall(text))

        @step
        def namespace_state(x: int) -> int:
            return x * NS.factor

        @step
        def instance_code(x: int) -> int:
            return DOUBLER.apply(x)
    """,
    "cc_model_class.py": """
        class LinearModel:
            def __init__(self, w):
                self.w = w

            def predict(self, x):
                return self.w * x
    """,
    "cc_producer.py": """
        from isthmus import step
        from cc_model_class import LinearModel

        @step
        def make_model(w: int):
            return LinearModel(w)
    """,
    "cc_params.py": """
        from isthmus import step

        @step
        def param_object(model):
            return model.predict(3)

        @step
        def input_artifact(model):
            return model.predict(4)
    """,
    "cc_outputs.py": """
        from isthmus import step

        @step(outputs=["low", "high"])
        def split(x: int):
            return x - 1, x + 1

        @step(outputs=["first"])
        def single(x: int) -> int:
            return x
    """,
    "cc_dispatch.py": """
        import cc_dispatch_ops
        from isthmus import step

        @step
        def dispatch(name: str, x: int) -> int:
            return getattr(cc_dispatch_ops, name)(x)
    """,
    "cc_dispatch_ops.py": """
        def plus_one(x):
            return x + 1

        def minus_one(x):
            return x - 1
    """,
    "cc_policy.py": """
        import os
        from pathlib import Path
        from isthmus import CachePolicy, step

        @step(cache=CachePolicy(files=["cc_data/*.txt"]))
        def read_files() -> str:
            return "".join(p.read_text() for p in sorted(Path("cc_data").glob("*.txt")))

        @step(cache=CachePolicy(env=["CC_VARIANT"]))
        def read_env() -> int:
            return len(os.environ.get("CC_VARIANT", ""))

        @step(cache=CachePolicy(version="1"))
        def versioned(x: int) -> int:
            return x
    """,
    "cc_paths.py": """
        from pathlib import Path
        from isthmus import step

        @step
        def read_path(p: Path) -> str:
            return p.read_text()

        @step
        def read_dir(d: Path) -> list:
            return sorted(f.name + "=" + f.read_text() for f in d.iterdir())
    """,
    "cc_floats.py": """
        import math
        import struct
        from isthmus import step

        @step
        def sign(x: float) -> float:
            return math.copysign(1.0, x)

        @step
        def nan_bits(x: float) -> str:
            return struct.pack("<d", x).hex()
    """,
    "cc_secret.py": """
        import os
        from isthmus import pipeline, step

        API_KEY = os.environ["CC_MY_TOKEN"]
        HEADER_VALUE = "Bearer " + os.environ["CC_SERVICE_TOKEN"]

        @step
        def keyed_call(x: int) -> int:
            return x + len(API_KEY) + len(HEADER_VALUE)

        @step
        def login(user: str, password: str) -> str:
            return f"{user}:{len(password)}"

        @pipeline
        def secret_flow():
            return keyed_call(1)
    """,
    "cc_unstable.py": """
        import socket
        from isthmus import step
        from isthmus.fingerprint import register_state

        SOCK = socket.socket()

        class Client:
            def __init__(self, endpoint):
                self.endpoint = endpoint
                self.sock = socket.socket()

        register_state(Client, lambda c: c.endpoint)
        CLIENT = Client("https://a.example")

        @step
        def uses_socket(x: int) -> int:
            return x if SOCK.fileno() >= 0 else -1

        @step
        def uses_client(x: int) -> int:
            return x + len(CLIENT.endpoint)
    """,
}

DATA: dict[str, str] = {
    "cc_settings.json": '{"threshold": 0.5, "label": "a"}',
    "cc_weights.txt": "1 2",
    "cc_pattern.txt": "a+",
    "cc_namespace.json": '{"factor": 2}',
    "cc_data/a.txt": "one",
    "cc_data/b.txt": "two",
    "cc_input.txt": "hello",
    "cc_dir/x.txt": "1",
    "cc_dir/y.txt": "y",
}

RUN_DAY = """
import json
import os
import struct
from pathlib import Path

import cc_containers, cc_control, cc_dispatch, cc_floats, cc_local_imports, cc_outputs, cc_params
import cc_partial, cc_paths, cc_policy, cc_producer, cc_secret, cc_state, cc_unstable, cc_wrappers
import ccpkg.steps
from cc_model_class import LinearModel

day2 = os.environ["CC_DAY"] == "2"
out = {}

def record(name, result, value=None):
    out[name] = {"hit": result.cache_hit, "value": result.value if value is None else value}

record("control", cc_control.control.run(10))
for name in ("partial_func", "partial_args", "partial_keywords"):
    record(name, getattr(cc_partial, name).run(10))
for name in ("dict_fn", "dict_const", "list_fn", "tuple_fn"):
    record(name, getattr(cc_containers, name).run(10))
record("from_import", cc_local_imports.from_import.run(10))
record("module_import", cc_local_imports.module_import.run(10))
record("relative_import", ccpkg.steps.relative_import.run(10))
for name in ("lru", "cache", "wrapped", "callable_instance"):
    record(name, getattr(cc_wrappers, name).run(10))
record("settings_state", cc_state.settings_state.run(1.0))
record("model_state", cc_state.model_state.run(2.0))
record("pattern_state", cc_state.pattern_state.run("aa b aaa"))
record("namespace_state", cc_state.namespace_state.run(10))
record("instance_code", cc_state.instance_code.run(10))
record("param_object", cc_params.param_object.run(LinearModel(2)))
made = cc_producer.make_model.run(2)
record("input_artifact", cc_params.input_artifact.run(made.outputs["output"]))
for name in ("split", "single"):
    r = getattr(cc_outputs, name).run(10)
    record(name, r, [[k, r.load(k)] for k in r.outputs])
record("dispatch", cc_dispatch.dispatch.run("plus_one", 10))
record("read_files", cc_policy.read_files.run())
record("read_env", cc_policy.read_env.run())
record("versioned", cc_policy.versioned.run(10))
record("read_path", cc_paths.read_path.run(Path("cc_input.txt")))
record("read_dir", cc_paths.read_dir.run(Path("cc_dir")))
record("sign", cc_floats.sign.run(-0.0 if day2 else 0.0))
payload = struct.unpack("<d", bytes.fromhex("010000000000f87f"))[0]
record("nan_bits", cc_floats.nan_bits.run(payload if day2 else float("nan")))
run = cc_secret.secret_flow.run()
out["keyed_call"] = {"hit": run.steps["keyed_call"].cache_hit, "value": run.outputs}
record("login", cc_secret.login.run("u", "1234"))
record("uses_socket", cc_unstable.uses_socket.run(10))
record("uses_client", cc_unstable.uses_client.run(10))
print(json.dumps(out))
"""

DAY1 = {
    "control": 17,
    "partial_func": 20,
    "partial_args": 20,
    "partial_keywords": 11,
    "dict_fn": 20,
    "dict_const": 11,
    "list_fn": 5,
    "tuple_fn": 105,
    "from_import": 30,
    "module_import": 40,
    "relative_import": 50,
    "lru": 20,
    "cache": 11,
    "wrapped": -10,
    "callable_instance": 30,
    "settings_state": "a:True",
    "model_state": 6.0,
    "pattern_state": 2,
    "namespace_state": 20,
    "instance_code": 20,
    "param_object": 6,
    "input_artifact": 8,
    "split": [["low", 9], ["high", 11]],
    "single": [["first", 10]],
    "dispatch": 11,
    "read_files": "onetwo",
    "read_env": 19,
    "versioned": 10,
    "read_path": "hello",
    "read_dir": ["x.txt=1", "y.txt=y"],
    "sign": 1.0,
    "nan_bits": "000000000000f87f",
    "keyed_call": 1 + 16 + 7 + 20,
    "login": "u:4",
    "uses_socket": 10,
    "uses_client": 27,
}

# (file, old, new) edits on disk between day 1 and day 2, and each edited case's new value.
EDITS: list[tuple[str, str, str]] = [
    ("cc_partial.py", "return x * 2", "return x * 3"),
    ("cc_partial.py", "functools.partial(mul, 2)", "functools.partial(mul, 3)"),
    ("cc_partial.py", "offset=1)", "offset=5)"),
    ("cc_containers.py", "return x * 2", "return x * 4"),
    ("cc_containers.py", '"offset": 1', '"offset": 2'),
    ("cc_containers.py", "return x + 1", "return x + 3"),
    ("cc_containers.py", "PAIR = (square, 5)", "PAIR = (square, 7)"),
    ("cc_local_helpers.py", "x * 3", "x * 30"),
    ("cc_local_mod.py", "x * 4", "x * 40"),
    ("ccpkg/helpers.py", "x * 5", "x * 50"),
    ("cc_wrappers.py", "return x * 2", "return x * 5"),
    ("cc_wrappers.py", "return x + 1", "return x + 9"),
    ("cc_wrappers.py", "return -x", "return -x - 1"),
    ("cc_wrappers.py", "return x * self.k", "return x * self.k + 1"),
    ("cc_settings.json", '"a"', '"b"'),
    ("cc_weights.txt", "1 2", "1 3"),
    ("cc_pattern.txt", "a+", "a"),
    ("cc_namespace.json", "2", "5"),
    ("cc_state.py", "return x * self.k", "return x * self.k * 10"),
    ("cc_model_class.py", "return self.w * x", "return self.w * x + 100"),
    ("cc_outputs.py", 'outputs=["low", "high"]', 'outputs=["high", "low"]'),
    ("cc_outputs.py", 'outputs=["first"]', 'outputs=["result"]'),
    ("cc_dispatch_ops.py", "x + 1", "x + 100"),
    ("cc_data/a.txt", "one", "uno"),
    ("cc_policy.py", 'version="1"', 'version="2"'),
    ("cc_input.txt", "hello", "world"),
    ("cc_dir/x.txt", "1", "2"),
    ("cc_unstable.py", '"https://a.example"', '"https://bb.example"'),
]
DAY2 = {
    **DAY1,
    "partial_func": 30,
    "partial_args": 30,
    "partial_keywords": 15,
    "dict_fn": 40,
    "dict_const": 12,
    "list_fn": 6,
    "tuple_fn": 107,
    "from_import": 300,
    "module_import": 400,
    "relative_import": 500,
    "lru": 50,
    "cache": 19,
    "wrapped": -11,
    "callable_instance": 31,
    "settings_state": "b:True",
    "model_state": 8.0,
    "pattern_state": 5,
    "namespace_state": 50,
    "instance_code": 200,
    "param_object": 106,
    "input_artifact": 108,
    "split": [["high", 9], ["low", 11]],
    "single": [["result", 10]],
    "dispatch": 110,
    "read_files": "unotwo",
    "read_env": 20,
    "read_path": "world",
    "read_dir": ["x.txt=2", "y.txt=y"],
    "sign": -1.0,
    "nan_bits": "010000000000f87f",
    "uses_client": 28,
}
UNCHANGED_ON_DAY2 = {"control", "login"}  # everything else was edited (or its input changed)
NEVER_HITS = {"uses_socket"}  # a module-level socket has no canonical state: documented, never reused

TOKEN_DAY1, TOKEN_DAY2 = "canary-AAAA-1111", "canary-BBBB-2222"  # same length: same output, new key
SERVICE_TOKEN = "svc-canary-XXXX-0001"
VARIANT_DAY1, VARIANT_DAY2 = "variant-canary-blue", "variant-canary-green"  # CachePolicy(env=...) values


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _day(project: Path, home: Path, *, day: int, token: str, variant: str) -> tuple[dict[str, Any], str]:
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(home),
        "CC_DAY": str(day),
        "CC_MY_TOKEN": token,
        "CC_SERVICE_TOKEN": SERVICE_TOKEN,
        "CC_VARIANT": variant,
        "PYTHONDONTWRITEBYTECODE": "1",  # an edit within the second of a .pyc, at the same size, would be missed by Python
        "PYTHONPATH": os.pathsep.join([str(project), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN_DAY], env=env, cwd=project, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"day {day} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _hits(day: dict[str, Any]) -> dict[str, bool]:
    return {k: v["hit"] for k, v in day.items()}


def _values(day: dict[str, Any]) -> dict[str, Any]:
    return {k: v["value"] for k, v in day.items()}


def _store_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("isthmus.db*") if p.is_file())


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Day 1, an unchanged day 1b, the edits, day 2, an unchanged day 3 — each a fresh process."""
    project = tmp_path_factory.mktemp("project")
    home = tmp_path_factory.mktemp("home")
    _write(project, PROJECT)
    _write(project, DATA)
    out: dict[str, Any] = {"project": project, "home": home}
    out["day1"], _ = _day(project, home, day=1, token=TOKEN_DAY1, variant=VARIANT_DAY1)
    out["day1b"], out["day1b_err"] = _day(project, home, day=1, token=TOKEN_DAY1, variant=VARIANT_DAY1)
    for name, old, new in EDITS:
        path = project / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    out["day2"], _ = _day(project, home, day=2, token=TOKEN_DAY2, variant=VARIANT_DAY2)
    out["day3"], _ = _day(project, home, day=2, token=TOKEN_DAY2, variant=VARIANT_DAY2)
    return out


def test_first_day_computes_every_case(days: dict[str, Any]) -> None:
    assert _values(days["day1"]) == DAY1
    assert not any(_hits(days["day1"]).values())


def test_an_unchanged_second_process_hits(days: dict[str, Any]) -> None:
    hits = _hits(days["day1b"])
    assert {k for k, hit in hits.items() if not hit} == NEVER_HITS
    assert _values(days["day1b"]) == DAY1


def test_every_edit_is_a_miss_with_the_new_value(days: dict[str, Any]) -> None:
    day2 = days["day2"]
    stale = {k: v for k, v in day2.items() if k not in UNCHANGED_ON_DAY2 and v["hit"]}
    assert stale == {}, f"stale cache hits after an edit: {stale}"
    assert _values(day2) == DAY2
    assert {k: day2[k]["hit"] for k in UNCHANGED_ON_DAY2} == dict.fromkeys(UNCHANGED_ON_DAY2, True)


def test_the_edited_code_is_stable_again_the_next_day(days: dict[str, Any]) -> None:
    hits = _hits(days["day3"])
    assert {k for k, hit in hits.items() if not hit} == NEVER_HITS
    assert _values(days["day3"]) == DAY2


def test_state_without_a_canonical_form_warns_with_the_fix(days: dict[str, Any]) -> None:
    err = days["day1b_err"]
    assert "SOCK" in err and "no canonical state" in err and "register_state" in err
    assert "CLIENT" not in err  # described by register_state: stable


def test_secrets_never_reach_the_store_or_the_diff(days: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    home = days["home"]
    stored = _store_bytes(home)
    for canary in (TOKEN_DAY1, TOKEN_DAY2, SERVICE_TOKEN, VARIANT_DAY1, VARIANT_DAY2):
        assert canary.encode() not in stored, canary

    from typer.testing import CliRunner

    from isthmus import config
    from isthmus.cli import app

    monkeypatch.setenv("ISTHMUS_HOME", str(home))
    config.reset()
    result = CliRunner().invoke(app, ["diff", "latest~2", "latest~1", "--json"])  # day 1b -> day 2
    assert result.exit_code == 0, result.output
    for canary in (TOKEN_DAY1, TOKEN_DAY2, SERVICE_TOKEN):
        assert canary not in result.output
    diff = json.loads(result.output)
    code = diff["steps"]["keyed_call"]["code"]  # the rotation is a visible change, without its value
    assert any("API_KEY = ***" in text for text in code.values()), code

    # the Flyte deck shows the same code diff between a step run and the one before it
    from flytekitplugins.isthmus.deck import changes_against
    from isthmus.store import MetadataStore

    store = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    try:
        runs = [r for r in store.step_runs_of(diff["run_b"]["id"]) if r["step_name"] == "keyed_call"]
        previous = store.previous_step_run("keyed_call", runs[0]["started_at"], exclude=runs[0]["id"])
        shown = json.dumps(changes_against(store, runs[0], previous))
    finally:
        store.dispose()
    assert "API_KEY = ***" in shown
    for canary in (TOKEN_DAY1, TOKEN_DAY2, SERVICE_TOKEN):
        assert canary not in shown


def test_a_secret_parameter_is_keyed_with_the_store_salt(days: dict[str, Any]) -> None:
    from isthmus.cache import cache_key
    from isthmus.hashing import hash_parts, hash_value
    from isthmus.policy import CachePolicy
    from isthmus.store import MetadataStore

    home = days["home"]
    with sqlite3.connect(home / "isthmus.db") as db:
        code_hash, deps_hash, key, params = db.execute(
            "SELECT code_hash, deps_hash, cache_key, params FROM step_runs WHERE step_name = 'login' LIMIT 1"
        ).fetchone()
    assert json.loads(params) == {"user": "u", "password": "***"}
    store = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    try:
        salt = store.secret_salt()
    finally:
        store.dispose()

    def key_with(password: str, salt: bytes) -> str:
        return cache_key(
            step_name="login",
            policy=CachePolicy(),
            code_hash=code_hash,
            deps_hash=deps_hash,
            params={"user": "u", "password": password},
            inputs={},
            output_materializers={},
            output_names=("output",),
            salt=salt,
        )

    assert key_with("1234", salt) == key  # what every process sharing this store computes
    # Without the salt, guessing the 4-digit password finds nothing: the key depends on the salt.
    other = bytes(32)
    assert all(key_with(f"{n:04d}", other) != key for n in range(0, 10000, 7)) and key_with("1234", other) != key
    unsalted = hash_parts(
        "isthmus-cache-v1", "login", code_hash, deps_hash, hash_value({"user": "u", "password": "1234"})
    )
    assert unsalted != key


# -- fast, in-process: the escape hatches, path digests and the salt ---------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": [1]}, "files="),
        ({"files": [""]}, "invalid path ''"),
        ({"files": ["a\x00b"]}, "invalid path"),
        ({"env": ["1BAD"]}, "invalid environment variable names ['1BAD']"),
        ({"env": ["OK", None]}, "[None]"),
        ({"version": 1.5}, "version=1.5"),
        ({"version": True}, "version=True"),
    ],
)
def test_cache_policy_escape_hatches_are_validated(kwargs: dict[str, Any], message: str) -> None:
    from isthmus import CachePolicy, StepDefinitionError

    with pytest.raises(StepDefinitionError) as info:
        CachePolicy(**kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text and ("e.g." in text or "such as" in text)


def test_cache_policy_escape_hatches_normalize() -> None:
    from isthmus import CachePolicy

    p = CachePolicy(files="conf.yaml", env="B", version=3)
    assert (p.files, p.env, p.version) == (("conf.yaml",), ("B",), "3")
    assert CachePolicy(files=[Path("a"), "b/*.csv", "a"], env=["B", "A", "B"]).files == ("a", "b/*.csv")
    assert CachePolicy(env=["B", "A", "B"]).env == ("A", "B")
    assert CachePolicy(files=["x"]).to_dict()["files"] == ["x"]


@pytest.mark.parametrize("outputs", [["a", "a"], ["a b"], [""], [1]])
def test_output_names_are_validated_when_the_step_is_defined(outputs: list[Any]) -> None:
    from isthmus import StepDefinitionError, step

    with pytest.raises(StepDefinitionError, match="must be distinct names"):
        step(outputs=outputs)(lambda x: (x, x))


def test_path_digests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.fingerprint.files import MISSING, declared_files_digest, path_digest

    f = tmp_path / "f.txt"
    assert path_digest(f) == MISSING
    f.write_text("a")
    first = path_digest(f)
    f.write_text("b")  # same size, maybe the same mtime: ctime tells
    assert path_digest(f) != first
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_text("1")
    base = path_digest(d)
    (d / "empty").mkdir()
    with_dir = path_digest(d)
    assert with_dir != base
    (d / "loop").symlink_to(d)  # a link loop is recorded by its target, never followed
    assert path_digest(d) not in (base, with_dir)
    os.mkfifo(d / "fifo")  # never opened: it would block
    assert path_digest(d)
    (d / "sub" / "x").write_text("2")
    assert path_digest(d) != with_dir

    monkeypatch.chdir(tmp_path)  # relative paths and globs start at the working directory
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1")
    glob_digest = declared_files_digest(["data/*.csv"])
    (tmp_path / "data" / "notes.txt").write_text("x")
    assert declared_files_digest(["data/*.csv"]) == glob_digest
    (tmp_path / "data" / "b.csv").write_text("1")
    assert declared_files_digest(["data/*.csv"]) != glob_digest
    assert declared_files_digest(["nothing/*.csv"]) != declared_files_digest(["nothing/*.tsv"])


def test_the_salt_is_shared_by_a_store_and_differs_between_stores(store_url: str, tmp_path: Path) -> None:
    from isthmus.store import MetadataStore

    one, two = MetadataStore(store_url), MetadataStore(store_url)
    other = MetadataStore(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        salt = one.secret_salt()
        assert len(salt) == 32 and two.secret_salt() == salt
        assert other.secret_salt() != salt
    finally:
        for s in (one, two, other):
            s.dispose()


def test_a_tampered_salt_is_a_clear_error(tmp_path: Path) -> None:
    from sqlalchemy import text

    from isthmus.errors import IsthmusError
    from isthmus.store import MetadataStore

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = MetadataStore(url)
    store.secret_salt()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE store_settings SET value = 'not-hex' WHERE name = 'secret_salt'"))
    store.dispose()
    fresh = MetadataStore(url)
    try:
        with pytest.raises(IsthmusError, match="secret salt .* delete that row"):
            fresh.secret_salt()
    finally:
        fresh.dispose()
