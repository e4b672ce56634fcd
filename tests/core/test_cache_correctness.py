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

from tests.helpers import REPO, run_python

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
        import cc_leaks
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
            cc_leaks.first_line(1)
            cc_leaks.annotated_default(1)
            cc_leaks.body_literals(1)
            cc_leaks.rendered_constants(1)
            return keyed_call(1)
    """,
    "cc_class_patch.py": """
        from isthmus import step

        class Model:
            def predict(self, x):
                return x * self.FACTOR

        Model.FACTOR = 2

        class Patched:
            pass

        def _impl(self, x):
            return x + 1

        Patched.go = _impl

        @step
        def attr_outside_body(x: int) -> int:
            return Model().predict(x)

        @step
        def method_patched_in(x: int) -> int:
            return Patched().go(x)
    """,
    "cc_arg_models.py": """
        import dataclasses

        class Scorer:
            def __init__(self, w):
                self.w = w

            def predict(self, x):
                return self.w * x

        class Chain:
            def __init__(self, model):
                self.model = model

            def run(self, x):
                return self.model.predict(x)

        @dataclasses.dataclass
        class Box:
            model: object

        def double(x):
            return x * 2
    """,
    "cc_arg_steps.py": """
        from cc_arg_models import Scorer
        from isthmus import step

        @step
        def nested_instance(chain, x: int) -> int:
            return chain.run(x)

        @step
        def in_namespace(ns, x: int) -> int:
            return ns.model.predict(x)

        @step
        def in_dataclass(box, x: int) -> int:
            return box.model.predict(x)

        @step
        def function_param(op, x: int) -> int:
            return op(x)

        @step
        def class_param(cls, x: int) -> int:
            return cls(2).predict(x)

        @step
        def make_scorers(w: int) -> list:
            return [Scorer(w)]

        @step
        def first_scorer(scorers, x: int) -> int:
            return scorers[0].predict(x)
    """,
    "cc_names.py": """
        import cc_names_a
        import cc_names_b
        from isthmus import step

        def make(k):
            def scale(x):
                return x * k
            return scale

        double = make(2)
        triple = make(3)

        @step
        def two_closures(x: int) -> int:
            return double(x) + triple(x)

        @step
        def same_qualname_helpers(x: int) -> int:
            return cc_names_a.helper(x) + cc_names_b.helper(x)

        @step
        def same_class_name_data(x: int) -> int:
            return x * cc_names_a.Config().K + x * cc_names_b.Config().K
    """,
    "cc_names_a.py": """
        from pathlib import Path

        K = 1

        def helper(x):
            return x * K

        class Config:
            K = int(Path("cc_ka.txt").read_text())
    """,
    "cc_names_b.py": """
        from pathlib import Path

        K = 2

        def helper(x):
            return x * K

        class Config:
            K = int(Path("cc_kb.txt").read_text())
    """,
    "cc_dynamic.py": """
        import importlib
        import sys
        from isthmus import step

        def double(x):
            return x * 2

        @step
        def via_globals(x: int) -> int:
            return globals()["double"](x)

        @step
        def via_sys_modules(x: int) -> int:
            return getattr(sys.modules[__name__], "double")(x)

        @step
        def via_import_module(x: int) -> int:
            return importlib.import_module("cc_dynamic_ops").triple(x)
    """,
    "cc_dynamic_ops.py": """
        def triple(x):
            return x * 3
    """,
    "cc_enum.py": """
        import enum
        from pathlib import Path
        from isthmus import step

        class FromFile(enum.Enum):
            A = int(Path("cc_enum.txt").read_text())

        @step
        def enum_value_from_file(x: int) -> int:
            return x * FromFile.A.value
    """,
    "ccns/helpers.py": """
        def double(x):
            return x * 2
    """,
    "cc_ns_steps.py": """
        import ccns.helpers
        from isthmus import step

        @step
        def ns_dotted(x: int) -> int:
            return ccns.helpers.double(x)

        @step
        def ns_local_import(x: int) -> int:
            import ccns.helpers
            return ccns.helpers.double(x)
    """,
    "cc_cond.py": """
        import sys
        from isthmus import step

        if sys.platform == "win32":
            class Impl:
                def go(self, x):
                    return x - 1
        else:
            class Impl:
                def go(self, x):
                    return x + 1

        @step
        def conditional_class(x: int) -> int:
            return Impl().go(x)
    """,
    "cc_stable.py": """
        from isthmus import step

        FNS = {lambda x: x + 1, lambda x: x * 2, lambda x: x - 3, lambda x: x, lambda x: -x, lambda x: x // 2}

        class Node:
            def __init__(self, name):
                self.name = name
                self.peers = []

        _ring = [Node(name) for name in "abcdefgh"]
        for _i, _node in enumerate(_ring):
            _node.peers.append(_ring[(_i + 1) % len(_ring)])
        GRAPH = set(_ring)
        VOCAB = {f"w{i}": i for i in range(150_000)}
        FLOATS = [float(i) for i in range(300_000)]
        BLOB = bytes(range(256)) * 20_000

        @step
        def set_of_lambdas(x: int) -> int:
            return x + sum(sorted(f(1) for f in FNS))

        @step
        def set_of_cyclic_objects(x: int) -> int:
            return x + len(GRAPH)

        @step
        def big_constants(x: int) -> float:
            return VOCAB["w5"] + FLOATS[x] + BLOB[x]
    """,
    "ccdex/__init__.py": "",
    "ccdex/dex_helpers.py": """
        class Single:
            def __reduce__(self):
                return "SINGLE"

        SINGLE = Single()

        def scale(x):
            return x * 2
    """,
    "ccdex/dex_steps.py": """
        try:
            from . import dex_helpers
        except ImportError:
            import dex_helpers
        from isthmus import step

        @step
        def cross_name(x: int) -> int:
            return dex_helpers.scale(x) + (1 if dex_helpers.SINGLE else 0)
    """,
    "cc_leaks.py": '''
        import base64
        import dataclasses
        import os
        from typing import NamedTuple
        from isthmus import step

        LEAK_GETENV = os.getenv("CC_UNSET_PASSWORD", "leak-canary-getenv-default")

        class Creds(NamedTuple):
            user: str
            password: str

        DB = Creds("admin", "leak-canary-namedtuple")
        DB_CREDS = ("admin", "leak-canary-creds-tuple")
        BASIC = "Basic " + base64.b64encode(("user:" + os.environ["CC_MY_TOKEN"]).encode()).decode()

        class Client:
            API_KEY = "leak-canary-class-first-line"

            def call(self, x):
                return x + len(self.API_KEY)

        @dataclasses.dataclass
        class Login:
            user: str
            password: str

        @step
        def first_line(x: int) -> int:
            token = "leak-canary-after-annotation"
            return x + len(token) + Client().call(0)

        @step
        def annotated_default(x: int, api_key: str = "leak-canary-annotated-default") -> int:
            return x + len(api_key)

        @step
        def body_literals(x: int) -> int:
            headers = {"Authorization": "Bearer leak-canary-inline-dict"}
            secret = f"leak-canary-fstring-{x}"
            api_key = """leak-canary-triple-quoted"""
            password = ("leak-canary-" "implicit-concat")
            if (token := "leak-canary-walrus"):
                x += len(token)
            key = os.getenv("CC_UNSET_TOKEN", "leak-canary-getenv-body")
            return x + len(headers) + len(secret) + len(api_key) + len(password) + len(key)

        @step
        def rendered_constants(x: int) -> int:
            return x + len(DB.password) + len(DB_CREDS[1]) + len(BASIC) + len(LEAK_GETENV)

        @step
        def pwd_param(user: str, pwd: str) -> int:
            return len(user) + len(pwd)

        @step
        def pass_phrase_param(user: str, pass_phrase: str) -> int:
            return len(pass_phrase)

        @step
        def dataclass_param(login) -> int:
            return len(login.password)
    ''',
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
    "cc_ka.txt": "1",
    "cc_kb.txt": "2",
    "cc_enum.txt": "2",
}

RUN_DAY = """
import random

# Objects and set members land elsewhere in memory every day: nothing may depend on where.
_noise = [bytes(random.randrange(0, 600)) for _ in range(random.randrange(1, 20_000))]
_noise_fns = [lambda: None for _ in range(random.randrange(1, 5_000))]
_noise_set = {str(random.random()) for _ in range(random.randrange(1, 1_000))}

import json
import os
import struct
import types
from pathlib import Path

import cc_containers, cc_control, cc_dispatch, cc_floats, cc_local_imports, cc_outputs, cc_params
import cc_partial, cc_paths, cc_policy, cc_producer, cc_secret, cc_state, cc_unstable, cc_wrappers
import cc_arg_models, cc_arg_steps, cc_class_patch, cc_cond, cc_dynamic, cc_enum, cc_leaks, cc_names
import cc_ns_steps, cc_stable
import ccpkg.steps
from cc_model_class import LinearModel

if os.environ["CC_RUN"] in ("1", "2"):  # the same file, imported under two names on different days
    from ccdex import dex_steps
else:
    import dex_steps

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

record("attr_outside_body", cc_class_patch.attr_outside_body.run(10))
record("method_patched_in", cc_class_patch.method_patched_in.run(10))
Scorer = cc_arg_models.Scorer
record("nested_instance", cc_arg_steps.nested_instance.run(cc_arg_models.Chain(Scorer(2)), 10))
record("in_namespace", cc_arg_steps.in_namespace.run(types.SimpleNamespace(model=Scorer(2)), 10))
record("in_dataclass", cc_arg_steps.in_dataclass.run(cc_arg_models.Box(Scorer(2)), 10))
record("function_param", cc_arg_steps.function_param.run(cc_arg_models.double, 10))
record("class_param", cc_arg_steps.class_param.run(Scorer, 10))
scorers = cc_arg_steps.make_scorers.run(2)  # a list of project objects, passed on as an artifact
record("first_scorer", cc_arg_steps.first_scorer.run(scorers.outputs["output"], 10))
for name in ("two_closures", "same_qualname_helpers", "same_class_name_data"):
    record(name, getattr(cc_names, name).run(10))
for name in ("via_globals", "via_sys_modules", "via_import_module"):
    record(name, getattr(cc_dynamic, name).run(10))
record("enum_value_from_file", cc_enum.enum_value_from_file.run(10))
record("ns_dotted", cc_ns_steps.ns_dotted.run(10))
record("ns_local_import", cc_ns_steps.ns_local_import.run(10))
record("conditional_class", cc_cond.conditional_class.run(10))
for name in ("set_of_lambdas", "set_of_cyclic_objects", "big_constants"):
    record(name, getattr(cc_stable, name).run(10))
record("cross_name", dex_steps.cross_name.run(10))
for name in ("first_line", "annotated_default", "body_literals", "rendered_constants"):
    record(name, run.steps[name])
record("pwd_param", cc_leaks.pwd_param.run("u", "leak-canary-pwd-param"))
record("pass_phrase_param", cc_leaks.pass_phrase_param.run("u", "leak-canary-pass-phrase"))
record("dataclass_param", cc_leaks.dataclass_param.run(cc_leaks.Login("u", "leak-canary-dataclass")))
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
    "attr_outside_body": 20,
    "method_patched_in": 11,
    "nested_instance": 20,
    "in_namespace": 20,
    "in_dataclass": 20,
    "function_param": 20,
    "class_param": 20,
    "first_scorer": 20,
    "two_closures": 50,
    "same_qualname_helpers": 30,
    "same_class_name_data": 30,
    "via_globals": 20,
    "via_sys_modules": 20,
    "via_import_module": 30,
    "enum_value_from_file": 20,
    "ns_dotted": 20,
    "ns_local_import": 20,
    "conditional_class": 11,
    "set_of_lambdas": 12,
    "set_of_cyclic_objects": 18,
    "big_constants": 25.0,
    "cross_name": 21,
    "first_line": 57,
    "annotated_default": 30,
    "body_literals": 116,
    "rendered_constants": 106,
    "pwd_param": 22,
    "pass_phrase_param": 23,
    "dataclass_param": 21,
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
    ("cc_class_patch.py", "Model.FACTOR = 2", "Model.FACTOR = 3"),
    ("cc_class_patch.py", "return x + 1", "return x + 2"),
    ("cc_arg_models.py", "return self.w * x", "return self.w * x + 100"),
    ("cc_arg_models.py", "return x * 2", "return x * 3"),
    ("cc_names.py", "triple = make(3)", "triple = make(4)"),
    ("cc_names_b.py", "K = 2", "K = 3"),
    ("cc_kb.txt", "2", "3"),
    ("cc_dynamic.py", "return x * 2", "return x * 3"),
    ("cc_dynamic_ops.py", "x * 3", "x * 30"),
    ("cc_enum.txt", "2", "3"),
    ("ccns/helpers.py", "x * 2", "x * 3"),
    ("cc_cond.py", "return x + 1", "return x + 2"),
    ("cc_leaks.py", "Client().call(0)", "Client().call(1)"),
    ("cc_leaks.py", "return x + len(api_key)\n", "return x + len(api_key) + 1\n"),
    ("cc_leaks.py", "return x + len(headers)", "return 1 + x + len(headers)"),
    ("cc_leaks.py", "return x + len(DB.password)", "return 1 + x + len(DB.password)"),
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
    "attr_outside_body": 30,
    "method_patched_in": 12,
    "nested_instance": 120,
    "in_namespace": 120,
    "in_dataclass": 120,
    "function_param": 30,
    "class_param": 120,
    "first_scorer": 120,
    "two_closures": 60,
    "same_qualname_helpers": 40,
    "same_class_name_data": 40,
    "via_globals": 30,
    "via_sys_modules": 30,
    "via_import_module": 300,
    "enum_value_from_file": 30,
    "ns_dotted": 30,
    "ns_local_import": 30,
    "conditional_class": 12,
    "first_line": 58,
    "annotated_default": 31,
    "body_literals": 117,
    "rendered_constants": 107,
}
# Everything else was edited (or its input changed). These must hit on every day after the first, under
# another PYTHONHASHSEED, other allocations, and (cross_name) another import name of the same file.
UNCHANGED_ON_DAY2 = {
    "control",
    "login",
    "set_of_lambdas",
    "set_of_cyclic_objects",
    "big_constants",
    "cross_name",
    "pwd_param",
    "pass_phrase_param",
    "dataclass_param",
}
NEVER_HITS = {"uses_socket"}  # a module-level socket has no canonical state: documented, never reused

TOKEN_DAY1, TOKEN_DAY2 = "canary-AAAA-1111", "canary-BBBB-2222"  # same length: same output, new key
SERVICE_TOKEN = "svc-canary-XXXX-0001"
VARIANT_DAY1, VARIANT_DAY2 = "variant-canary-blue", "variant-canary-green"  # CachePolicy(env=...) values


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _day(
    project: Path, home: Path, *, day: int, run: str, seed: str, token: str, variant: str
) -> tuple[dict[str, Any], str]:
    env = {
        **os.environ,
        "ISTHMUS_HOME": str(home),
        "CC_DAY": str(day),
        "CC_RUN": run,
        "PYTHONHASHSEED": seed,
        "CC_MY_TOKEN": token,
        "CC_SERVICE_TOKEN": SERVICE_TOKEN,
        "CC_VARIANT": variant,
        "PYTHONDONTWRITEBYTECODE": "1",  # an edit within the second of a .pyc, at the same size, would be missed by Python
        "PYTHONPATH": os.pathsep.join(
            [str(project), str(project / "ccdex"), str(REPO), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUN_DAY], env=env, cwd=project, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"day {day} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _flow_runs_day1b_day2() -> list[str]:
    """The ids of the ``secret_flow`` runs of day 1b and day 2 (each ``step.run`` is a pipeline run too)."""
    from isthmus.defaults import metadata_store

    day3, day2, day1b, _day1 = (r["id"] for r in metadata_store().list_runs(pipeline="secret_flow"))
    return [day1b, day2]


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
    out["day1"], _ = _day(project, home, day=1, run="1", seed="101", token=TOKEN_DAY1, variant=VARIANT_DAY1)
    out["day1b"], out["day1b_err"] = _day(
        project, home, day=1, run="1b", seed="202", token=TOKEN_DAY1, variant=VARIANT_DAY1
    )
    for name, old, new in EDITS:
        path = project / name
        text = path.read_text()
        assert old in text, (name, old)
        path.write_text(text.replace(old, new, 1))
    out["day2"], _ = _day(project, home, day=2, run="2", seed="303", token=TOKEN_DAY2, variant=VARIANT_DAY2)
    out["day3"], _ = _day(project, home, day=2, run="3", seed="404", token=TOKEN_DAY2, variant=VARIANT_DAY2)
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

    from click.testing import CliRunner

    from isthmus import config
    from isthmus.cli import app

    monkeypatch.setenv("ISTHMUS_HOME", str(home))
    config.reset()
    result = CliRunner().invoke(app, ["diff", *_flow_runs_day1b_day2(), "--json"])
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


LEAK_CANARY = b"leak-canary"  # every literal and parameter value planted in cc_leaks.py starts with it


def _leak_context(blob: bytes, needle: bytes) -> str:
    at = blob.find(needle)
    return blob[max(at - 120, 0) : at + 80].decode(errors="replace")


def test_no_secret_in_source_constants_or_parameters_reaches_a_record(
    days: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Literals bound to credential names in any position, rendered constants (named tuples, secret-named
    tuples, a base64 Basic header, a getenv default of a secret variable) and secret parameters (``pwd``,
    ``pass_phrase``, a dataclass with a password) never reach the store, the lineage events or a diff."""
    import base64

    home = days["home"]
    basic = [base64.b64encode(f"user:{t}".encode()) for t in (TOKEN_DAY1, TOKEN_DAY2)]
    records = {"store": _store_bytes(home), "lineage": (home / "lineage" / "events.jsonl").read_bytes()}
    for where, blob in records.items():
        for needle in (LEAK_CANARY, *basic):
            assert needle not in blob, f"{where}: {_leak_context(blob, needle)}"

    from click.testing import CliRunner

    from isthmus import config
    from isthmus.cli import app

    monkeypatch.setenv("ISTHMUS_HOME", str(home))
    config.reset()
    result = CliRunner().invoke(app, ["diff", *_flow_runs_day1b_day2(), "--json"])
    assert result.exit_code == 0, result.output
    shown = result.output.encode()
    for needle in (LEAK_CANARY, *basic):
        assert needle not in shown, _leak_context(shown, needle)
    steps = json.loads(result.output)["steps"]
    for name in ("first_line", "annotated_default", "body_literals", "rendered_constants"):
        assert name in steps and steps[name]["code"], name  # the diff does show those sources


PYC_STEP = """
from isthmus import step

@step
def scaled(x: int) -> int:
    return x * 3
"""
PYC_DAY = """
import json
import cc_pyc
r = cc_pyc.scaled.run(10)
print(json.dumps({"hit": r.cache_hit, "value": r.value}))
"""


def test_stale_bytecode_is_never_a_wrong_hit(tmp_path: Path) -> None:
    """A same-size edit within the mtime of a ``.pyc`` makes Python run the old bytecode while the source on
    disk is new: the run is a miss (its key unique to the process, with a warning), and the old result is
    never stored under the new source's key."""
    import importlib.util
    import py_compile

    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    source = project / "cc_pyc.py"
    source.write_text(PYC_STEP)
    cached = Path(importlib.util.cache_from_source(str(source)))
    py_compile.compile(str(source), cfile=str(cached), invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)

    def day() -> tuple[dict[str, Any], str]:
        env = {
            **os.environ,
            "ISTHMUS_HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",  # Python reads the .pyc but never rewrites it
            "PYTHONPATH": os.pathsep.join([str(project), str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.run(
            [sys.executable, "-c", PYC_DAY], env=env, cwd=project, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    assert day()[0] == {"hit": False, "value": 30}
    assert day()[0] == {"hit": True, "value": 30}
    st = source.stat()
    source.write_text(PYC_STEP.replace("x * 3", "x * 4"))  # same size, and the same mtime below
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    stale, err = day()
    assert stale == {"hit": False, "value": 30}  # Python ran the old bytecode: not the old result as a hit
    assert "does not match its source" in err and "cc_pyc" in err
    assert day()[0] == {"hit": False, "value": 30}  # and that result was not stored under a shareable key
    cached.unlink()
    assert day()[0] == {"hit": False, "value": 40}
    assert day()[0] == {"hit": True, "value": 40}


SALT_DAY = """
import json
from isthmus import step

@step
def salted_login(user: str, password: str) -> int:
    return len(password)

r = salted_login.run("u", "1234")
print(json.dumps({"hit": r.cache_hit, "key": r.cache_key}))
"""


def test_a_salt_kept_outside_the_store_is_shared_by_processes_and_absent_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ISTHMUS_SECRET_SALT_FILE``: every process reads the salt from the file; someone who can read the
    metadata store alone cannot test guesses of a secret parameter against the stored key."""
    from isthmus.cache import cache_key
    from isthmus.config import Settings
    from isthmus.policy import CachePolicy
    from isthmus.store import MetadataStore

    salt_file = tmp_path / "salt"
    salt_file.write_text("f" * 16 + "0123456789abcdef" * 3 + "\n")
    home = tmp_path / "home"
    env = {"ISTHMUS_HOME": str(home), "ISTHMUS_SECRET_SALT_FILE": str(salt_file)}
    first = run_python(SALT_DAY, env=env, cwd=tmp_path)
    second = run_python(SALT_DAY, env=env, cwd=tmp_path)
    assert (first["hit"], second["hit"]) == (False, True) and first["key"] == second["key"]

    with sqlite3.connect(home / "isthmus.db") as db:
        code_hash, deps_hash = db.execute(
            "SELECT code_hash, deps_hash FROM step_runs WHERE step_name = 'salted_login' LIMIT 1"
        ).fetchone()
        stored = db.execute("SELECT value FROM store_settings WHERE name = 'secret_salt'").fetchone()
    assert stored is None  # the store never created (nor needed) a salt of its own

    def key_with(password: str, salt: bytes) -> str:
        return cache_key(
            step_name="salted_login",
            policy=CachePolicy(),
            code_hash=code_hash,
            deps_hash=deps_hash,
            params={"user": "u", "password": password},
            inputs={},
            output_names=("output",),
            salt=salt,
        )

    monkeypatch.setenv("ISTHMUS_SECRET_SALT_FILE", str(salt_file))
    salt = Settings.from_env().secret_salt
    assert salt is not None and key_with("1234", salt) == first["key"]
    store = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    try:
        store_salt = store.secret_salt()  # what a reader of the store alone could use
    finally:
        store.dispose()
    assert all(key_with(f"{n:04d}", store_salt) != first["key"] for n in range(10000))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ISTHMUS_SECRET_SALT": "short"}, "ISTHMUS_SECRET_SALT"),
        ({"ISTHMUS_SECRET_SALT_FILE": "/nonexistent/salt"}, "ISTHMUS_SECRET_SALT_FILE='/nonexistent/salt'"),
    ],
)
def test_a_bad_external_salt_is_one_clear_line(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isthmus.config import Settings
    from isthmus.errors import ConfigurationError

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env()
    text = str(info.value)
    assert message in text and "\n" not in text and "openssl rand -hex 32" in text
    assert "short" not in text  # the value of a secret setting is never shown


FLYTE_VERSION = """
import json
from flytekit.core.cache import VersionParameters
from flytekitplugins.isthmus import IsthmusCachePolicy
import cc_flyte_steps
policy = IsthmusCachePolicy()
print(json.dumps({n: policy.get_version("", VersionParameters(func=getattr(cc_flyte_steps, n))) for n in
                  ("keyed", "plain")}))
"""


def test_the_flyte_cache_version_uses_the_runners_key_material(tmp_path: Path) -> None:
    """IsthmusCachePolicy: the same store salt as the runner (a step reaching a secret constant keeps its
    version across processes), and output names, files= and env= count."""
    from flytekit.core.cache import VersionParameters

    from flytekitplugins.isthmus import IsthmusCachePolicy
    from isthmus import CachePolicy, step

    write = {
        "cc_flyte_steps.py": """
            import os
            from isthmus import step

            API_KEY = os.environ["CC_FLYTE_TOKEN"]

            @step
            def keyed(x: int) -> int:
                return x + len(API_KEY)

            @step
            def plain(x: int) -> int:
                return x
        """,
        "cc_flyte_data.txt": "one",
    }
    _write(tmp_path, write)
    env = {"ISTHMUS_HOME": str(tmp_path / "home"), "CC_FLYTE_TOKEN": "flyte-canary-0001"}
    one = run_python(FLYTE_VERSION, env=env, cwd=tmp_path)
    two = run_python(FLYTE_VERSION, env=env, cwd=tmp_path)
    assert one == two
    rotated = run_python(FLYTE_VERSION, env={**env, "CC_FLYTE_TOKEN": "flyte-canary-0002"}, cwd=tmp_path)
    assert rotated["keyed"] != one["keyed"] and rotated["plain"] == one["plain"]

    def version(fn: Any, **kwargs: Any) -> str:
        return IsthmusCachePolicy().get_version("", VersionParameters(func=step(fn, name="flyte_inc", **kwargs)))

    def inc(x: int) -> int:
        return x + 1

    base = version(inc)
    assert version(inc, outputs=["renamed"]) != base
    with_file = version(inc, cache=CachePolicy(files=[str(tmp_path / "cc_flyte_data.txt")]))
    (tmp_path / "cc_flyte_data.txt").write_text("two")
    assert version(inc, cache=CachePolicy(files=[str(tmp_path / "cc_flyte_data.txt")])) != with_file
    os.environ.pop("CC_FLYTE_VARIANT", None)
    unset = version(inc, cache=CachePolicy(env=["CC_FLYTE_VARIANT"]))
    os.environ["CC_FLYTE_VARIANT"] = "blue"
    try:
        assert version(inc, cache=CachePolicy(env=["CC_FLYTE_VARIANT"])) != unset
    finally:
        del os.environ["CC_FLYTE_VARIANT"]


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
