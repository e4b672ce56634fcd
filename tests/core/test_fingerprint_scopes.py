"""A module global counts in a code fingerprint only where the code reads it as Python resolves names: a
parameter or local of the same name, or a name a nested scope takes from its enclosing function, is not
the global; a ``global`` statement, a default, a decorator, a class body or a nested scope that does
read it is."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from isthmus import Client
from isthmus.fingerprint.code import clear_memo, code_fingerprint
from tests.helpers import import_fresh, run_python, write_module

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_bytecode_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each case rewrites one module within the same second: a .pyc would be taken for the new source."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def _fp_and_result(tmp_path: Path, name: str, source: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    """The fingerprint of ``f`` in a fresh import of ``source``, then what ``f(*args)`` returns."""
    write_module(tmp_path, name, source)
    mod = import_fresh(tmp_path, name)
    clear_memo()
    fp = code_fingerprint(mod.f).hash
    return fp, mod.f(*args)


# (template with {V} for the global's value, arguments of f)
NOT_READ = {
    "parameter": ("k = {V}\ndef f(k=1):\n    return k + 1\n", (5,)),
    "keyword-only parameter": ("k = {V}\ndef f(x, *, k=1):\n    return x + k\n", (5,)),
    "star parameter": ("k = {V}\ndef f(*k):\n    return sum(k)\n", (5,)),
    "double-star parameter": ("k = {V}\ndef f(x, **k):\n    return x + len(k)\n", (5,)),
    "local assignment": ("k = {V}\ndef f(x):\n    k = x * 2\n    return k\n", (5,)),
    "for target": ("k = {V}\ndef f(x):\n    t = 0\n    for k in range(x):\n        t += k\n    return t\n", (5,)),
    "walrus": ("k = {V}\ndef f(x):\n    if (k := x + 1) > 0:\n        return k\n    return 0\n", (5,)),
    "comprehension variable": ("k = {V}\ndef f(x):\n    return sum([k for k in range(x)])\n", (5,)),
    "comprehension over a parameter": ("k = {V}\ndef f(k):\n    return sum(i for i in range(k))\n", (5,)),
    "comprehension reads the parameter": ("k = {V}\ndef f(k):\n    return [k * i for i in range(3)]\n", (5,)),
    "lambda parameter": ("k = {V}\ndef f(x):\n    return (lambda k: k * 2)(x)\n", (5,)),
    "nested function reads the outer parameter": (
        "k = {V}\ndef f(k):\n    def g():\n        return k * 2\n    return g()\n",
        (5,),
    ),
    "helper parameter": ("k = {V}\ndef helper(k):\n    return k + 1\ndef f(x):\n    return helper(x)\n", (5,)),
    "method parameter": (
        "k = {V}\nclass C:\n    def m(self, k):\n        return k\ndef f(x):\n    return C().m(x)\n",
        (5,),
    ),
    "closure made by a factory": (
        "k = {V}\ndef make(k):\n    def f(x):\n        return x * k\n    return f\nf = make(2)\n",
        (5,),
    ),
    "lambda without source": ("k = {V}\nf = lambda k: k + 1\n", (5,)),
    "a parameter called globals": ("k = {V}\ndef f(globals):\n    return globals\n", (5,)),
}

READ = {
    "plain read": ("k = {V}\ndef f(x):\n    return x + k\n", (5,)),
    "global statement": ("k = {V}\ndef f(x):\n    global k\n    return x + k\n", (5,)),
    "global augmented assignment": ("k = {V}\ndef f(x):\n    global k\n    k += x\n    return x\n", (5,)),
    "default argument": ("k = {V}\ndef f(x, y=k):\n    return x + y\n", (5,)),
    "default of the parameter it shadows": ("k = {V}\ndef f(k=k):\n    return k\n", ()),
    "decorator argument, with a parameter of that name": (
        "k = {V}\ndef check(ok):\n    def deco(fn):\n        return fn\n    return deco\n"
        "@check(k > 100)\ndef f(k):\n    return k\n",
        (5,),
    ),
    "annotation": ("k = {V}\ndef f(x: k) -> int:\n    return x\n", (5,)),
    "nested function reads it while a sibling has a parameter of that name": (
        "k = {V}\ndef f(x):\n    def a(k):\n        return k\n    def b():\n        return k\n    return a(x) + b()\n",
        (5,),
    ),
    "nested global statement over an outer parameter": (
        "k = {V}\ndef f(k):\n    def g():\n        global k\n        return k\n    return k + g()\n",
        (5,),
    ),
    "lambda reads it": ("k = {V}\ndef f(x):\n    return (lambda q: q + k)(x)\n", (5,)),
    "comprehension reads it": ("k = {V}\ndef f(x):\n    return [i + k for i in range(x)]\n", (5,)),
    "comprehension variable elsewhere": (
        "k = {V}\ndef f(x):\n    a = [k for k in range(x)]\n    return sum(a) + k\n",
        (5,),
    ),
    # A class body looks a name up in its own namespace, then the module's, never the enclosing function's.
    "class body inside a function with a parameter of that name": (
        "k = {V}\ndef f(k):\n    class C:\n        k = k\n    return C.k\n",
        (5,),
    ),
    "class body of a class it uses": (
        "k = {V}\nclass C:\n    big = k > 100\n    def m(self, x):\n        return x\ndef f(x):\n    return C().m(x)\n",
        (5,),
    ),
    "helper reads it, the step has a parameter of that name": (
        "k = {V}\ndef helper(x):\n    return x + k\ndef f(k):\n    return helper(k)\n",
        (5,),
    ),
    "lambda without source reads it": ("k = {V}\nf = lambda x: x + k\n", (5,)),
    # ``nonlocal`` bound outside the function's own source: no scope analysis, every name may be a global.
    "nonlocal beside a read": (
        "k = {V}\ndef make():\n    n = 0\n    def f(x):\n        nonlocal n\n        n += x\n        return n + k\n"
        "    return f\nf = make()\n",
        (5,),
    ),
}


@pytest.mark.parametrize(
    ("case", "read"),
    [*((case, False) for case in NOT_READ), *((case, True) for case in READ)],
)
def test_a_global_counts_only_where_it_is_read(tmp_path: Path, case: str, read: bool) -> None:
    template, args = (READ if read else NOT_READ)[case]
    name = f"fpscope_{next(_counter)}"
    fp2, out2 = _fp_and_result(tmp_path, name, template.replace("{V}", "2"), args)
    fp3, out3 = _fp_and_result(tmp_path, name, template.replace("{V}", "3"), args)
    fp2_again, _ = _fp_and_result(tmp_path, name, template.replace("{V}", "2"), args)
    assert fp2 == fp2_again
    assert (fp2 != fp3) is read, case
    if out2 != out3:  # what Python computes depends on the global: it must count
        assert fp2 != fp3, case


def test_the_shadowed_global_is_not_a_component(tmp_path: Path) -> None:
    src = "k = 2\nscale = 3\ndef f(k: int = 1) -> int:\n    return k * scale\n"
    write_module(tmp_path, "fpscope_components", src)
    mod = import_fresh(tmp_path, "fpscope_components")
    clear_memo()
    assert set(code_fingerprint(mod.f).components) == {"f", "f:scale"}


PROCESS_STEPS = """
import os
from isthmus import pipeline, step

k = int(os.environ["KVAL"])


@step
def f(k: int = 1) -> int:
    return k + 1


@step
def h(x: int) -> int:
    return x + k


@pipeline
def p():
    return h(f(k=3))
"""

PROCESS_RUN = """
import json
from fpscope_proc import p
run = p.run()
print(json.dumps({"id": run.id, "hits": {name: s.cache_hit for name, s in run.steps.items()}}))
"""


def test_a_shadowed_global_changed_between_processes_is_a_hit(tmp_path: Path, isthmus_home: Path) -> None:
    """Two fresh processes with a different value of a global that ``f`` shadows with a parameter: ``f``
    hits; ``h``, which reads the global, misses and why names the global."""
    write_module(tmp_path, "fpscope_proc", PROCESS_STEPS)

    def day(kval: str) -> dict[str, Any]:
        return run_python(PROCESS_RUN, env={"ISTHMUS_HOME": str(isthmus_home), "KVAL": kval}, cwd=tmp_path)

    assert day("1")["hits"] == {"f": False, "h": False}
    second = day("2")
    assert second["hits"] == {"f": True, "h": False}
    client = Client()
    assert client.explain(f"{second['id']}:h").reason == "code: h:k changed"
    assert day("2")["hits"] == {"f": True, "h": True}
