"""Code fingerprints: what counts as a change and what does not."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from isthmus.fingerprint.code import clear_memo, code_fingerprint
from isthmus.fingerprint.deps import dependency_fingerprint
from tests.helpers import import_fresh, write_module

_counter = itertools.count()


def fp_of(tmp_path: Path, source: str, attr: str = "f") -> tuple[str, dict[str, str]]:
    name = f"fpmod_{next(_counter)}"
    write_module(tmp_path, name, source)
    mod = import_fresh(tmp_path, name)
    clear_memo()
    fp = code_fingerprint(getattr(mod, attr))
    return fp.hash, fp.sources


BASE = """
from isthmus import step

@step
def f(x: int) -> int:
    return x + 1
"""


def test_cosmetic_changes_do_not_count(tmp_path: Path) -> None:
    base, _ = fp_of(tmp_path, BASE)
    cosmetic = '''
# a comment
from isthmus import step, CachePolicy

@step(retries=3, cache=CachePolicy(expires_after="1d"))
def f(x: int) -> int:
    """A docstring that was added."""
    # explain
    return   x+1   # trailing comment
'''
    assert fp_of(tmp_path, cosmetic)[0] == base


def test_body_change_counts(tmp_path: Path) -> None:
    assert fp_of(tmp_path, BASE)[0] != fp_of(tmp_path, BASE.replace("x + 1", "x + 2"))[0]


HELPERS = """
from isthmus import step

SCALE = {scale}

def _double(x):
    return x * {factor}

def helper(x):
    return _double(x) * SCALE

class Model:
    def predict(self, x):
        return x - {offset}

def unrelated():
    return {unrelated}

@step
def f(x: int) -> int:
    return helper(x) + Model().predict(x)
"""


def _helpers(**kw: int) -> str:
    values = {"scale": 2, "factor": 2, "offset": 1, "unrelated": 0, **kw}
    return HELPERS.format(**values)


def test_transitive_helpers_classes_and_constants_count(tmp_path: Path) -> None:
    base, sources = fp_of(tmp_path, _helpers())
    assert "helper" in sources
    assert "_double" in sources
    assert "Model" in sources
    assert fp_of(tmp_path, _helpers(factor=3))[0] != base  # helper of a helper
    assert fp_of(tmp_path, _helpers(scale=5))[0] != base  # module constant
    assert fp_of(tmp_path, _helpers(offset=7))[0] != base  # method of a class used
    assert fp_of(tmp_path, _helpers(unrelated=9))[0] == base  # code the step never reaches
    assert sources["helper:SCALE"] == "SCALE = 2"


def test_helpers_in_other_project_modules_via_attribute(tmp_path: Path) -> None:
    write_module(tmp_path, "fp_shared_utils", "def clean(x):\n    return x.strip()\n")
    src = """
import fp_shared_utils
from isthmus import step

@step
def f(s: str) -> str:
    return fp_shared_utils.clean(s)
"""
    base, sources = fp_of(tmp_path, src)
    assert "clean" in sources
    write_module(tmp_path, "fp_shared_utils", "def clean(x):\n    return x.strip().lower()\n")
    import_fresh(tmp_path, "fp_shared_utils")
    assert fp_of(tmp_path, src)[0] != base


def test_installed_libraries_are_not_fingerprinted_by_source(tmp_path: Path) -> None:
    src = """
import json
import numpy as np
from isthmus import step

@step
def f(x: list) -> str:
    return json.dumps(np.asarray(x).tolist())
"""
    _, sources = fp_of(tmp_path, src)
    assert list(sources) == ["f"]


def test_closure_and_default_values_count(tmp_path: Path) -> None:
    a = fp_of(tmp_path, "def make(k):\n    def f(x):\n        return x * k\n    return f\nf = make(2)\n")[0]
    b = fp_of(tmp_path, "def make(k):\n    def f(x):\n        return x * k\n    return f\nf = make(3)\n")[0]
    assert a != b


def test_source_text_is_kept_for_diffs(tmp_path: Path) -> None:
    _, sources = fp_of(tmp_path, _helpers())
    helper_src = sources["helper"]
    assert "return _double(x) * SCALE" in helper_src


def test_dependency_fingerprint_modes(tmp_path: Path) -> None:
    name = f"fpmod_{next(_counter)}"
    write_module(tmp_path, name, "import numpy\nimport json\n\ndef f():\n    return numpy.zeros(1)\n")
    import_fresh(tmp_path, name)
    deps = dependency_fingerprint("imports", [name])
    assert "numpy" in deps.versions and "isthmus" not in deps.versions
    assert dependency_fingerprint(None, [name]).versions == {}
    assert "numpy" in dependency_fingerprint("all", [name]).versions
    listed = dependency_fingerprint(["NumPy", "not-a-real-dist"], [name]).versions
    assert listed["numpy"] == deps.versions["numpy"] and listed["not-a-real-dist"] == "not-installed"


@pytest.mark.parametrize("bad", ["lambda", "nested"])
def test_non_importable_steps_are_reported(bad: str) -> None:
    from isthmus import NotImportableError, Step

    if bad == "lambda":
        s = Step(lambda x: x, name="anon")
        match = "lambda"
    else:

        def inner(x: int) -> int:
            return x

        s = Step(inner)
        match = "inside another function"
    assert s(3) == 3  # still callable locally
    with pytest.raises(NotImportableError, match=match):
        s.check_importable()
    import pickle

    with pytest.raises(NotImportableError):
        pickle.dumps(s)
