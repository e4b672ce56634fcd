"""Code fingerprints: what counts as a change and what does not."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from isthmus.fingerprint.code import clear_memo, code_fingerprint
from isthmus.fingerprint.deps import dependency_fingerprint
from tests.helpers import import_fresh, write_module

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_bytecode_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests rewrite a module within the same second, often to the same size: a .pyc written by
    the first import would be taken for the new source (Python checks mtime in seconds and size)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


def fresh_module(tmp_path: Path, source: str) -> Any:
    """A new module holding ``source``, with no memoized fingerprints."""
    name = f"fpmod_{next(_counter)}"
    write_module(tmp_path, name, source)
    mod = import_fresh(tmp_path, name)
    clear_memo()
    return mod


def fp_of(tmp_path: Path, source: str, attr: str = "f", name: str | None = None) -> tuple[str, dict[str, str]]:
    name = name or f"fpmod_{next(_counter)}"
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


# -- every path the code can take ------------------------------------------------------------------
def _variants(tmp_path: Path, template: str, *values: str, attr: str = "f") -> list[str]:
    """Fingerprints of one module (same name, as in every day of a project) edited to each value."""
    name = f"fpmod_{next(_counter)}"
    return [fp_of(tmp_path, template.replace("{V}", v), attr, name)[0] for v in values]


@pytest.mark.parametrize(
    "template",
    [
        # functools.partial: the function it wraps, its args, its keywords
        "import functools\ndef g(x, k=0):\n    return x * {V}\nP = functools.partial(g)\ndef f(x):\n    return P(x)\n",
        "import functools\ndef g(k, x):\n    return x * k\nP = functools.partial(g, {V})\ndef f(x):\n    return P(x)\n",
        "import functools\ndef g(x, k=0):\n    return x * k\nP = functools.partial(g, k={V})\ndef f(x):\n    return P(x)\n",
        # containers holding functions, and constants beside them
        "def g(x):\n    return x * {V}\nOPS = {'g': g}\ndef f(x):\n    return OPS['g'](x)\n",
        "def g(x):\n    return x\nOPS = {'g': g, 'k': {V}}\ndef f(x):\n    return OPS['k']\n",
        "def g(x):\n    return x * {V}\nOPS = [g]\ndef f(x):\n    return OPS[0](x)\n",
        "def g(x):\n    return x * {V}\nOPS = (g, 1)\ndef f(x):\n    return OPS[0](x)\n",
        "def g(x):\n    return x * {V}\nOPS = {frozenset({g})}\ndef f(x):\n    return len(OPS)\n",
        # decorators that return non-function callables
        "import functools\n@functools.lru_cache(maxsize=None)\ndef g(x):\n    return x * {V}\ndef f(x):\n    return g(x)\n",
        "import functools\n@functools.cache\ndef g(x):\n    return x * {V}\ndef f(x):\n    return g(x)\n",
        "class W:\n    def __init__(self, fn):\n        self.__wrapped__ = fn\n    def __call__(self, x):\n"
        "        return self.__wrapped__(x)\n@W\ndef g(x):\n    return x * {V}\ndef f(x):\n    return g(x)\n",
        # a decorator's wrapper body (functools.wraps makes inspect show the wrapped function instead)
        "import functools\ndef deco(fn):\n    @functools.wraps(fn)\n    def wrapper(x):\n        return fn(x) * {V}\n"
        "    return wrapper\n@deco\ndef g(x):\n    return x\ndef f(x):\n    return g(x)\n",
        # decorator arguments other than isthmus's
        "def scaled(k):\n    def deco(fn):\n        return fn\n    return deco\n@scaled({V})\ndef f(x):\n    return x\n",
        # callable instances and the code of their class
        "class S:\n    def __call__(self, x):\n        return x * {V}\nSCALE = S()\ndef f(x):\n    return SCALE(x)\n",
        # state that is not source
        "import types\nNS = types.SimpleNamespace(k={V})\ndef f(x):\n    return NS.k\n",
        "import re\nPAT = re.compile('a+', re.I if {V} == 2 else re.M)\ndef f(x):\n    return PAT.findall(x)\n",
        "class C:\n    def __init__(self):\n        self.k = {V}\nOBJ = C()\ndef f(x):\n    return OBJ.k\n",
        "class C:\n    __slots__ = ('k',)\n    def __init__(self):\n        self.k = {V}\nOBJ = C()\ndef f(x):\n    return OBJ.k\n",
        "import dataclasses\n@dataclasses.dataclass\nclass C:\n    k: int\nOBJ = C({V})\ndef f(x):\n    return OBJ.k\n",
        "class C:\n    def get(self):\n        return {V}\nOBJ = C()\ndef f(x):\n    return OBJ.get()\n",
        "class C:\n    K = [{V}]\ndef f(x):\n    return C.K\n",
        # defaults and closures of helpers, computed values included
        "def g(x, k=int('{V}')):\n    return x * k\ndef f(x):\n    return g(x)\n",
    ],
)
def test_every_reachable_change_counts(tmp_path: Path, template: str) -> None:
    one, two, one_again = _variants(tmp_path, template, "2", "3", "2")
    assert one != two
    assert one == one_again  # stable: a fresh import of the same code gives the same fingerprint


def test_partial_and_containers_show_readable_sources(tmp_path: Path) -> None:
    src = "import functools\ndef g(x, k=0):\n    return x\nP = functools.partial(g, k=2)\nOPS = {'g': g, 'k': 1}\n"
    src += "def f(x):\n    return P(x) + OPS['k']\n"
    _, sources = fp_of(tmp_path, src)
    assert sources["f:P"] == "P = partial(g, k=2)"
    assert sources["f:OPS"] == "OPS = {'g': g, 'k': 1}"
    assert "g" in sources


def test_isthmus_decorator_options_do_not_count_but_other_decorators_do(tmp_path: Path) -> None:
    plain = fp_of(tmp_path, "from isthmus import step\n@step\ndef f(x):\n    return x\n")[0]
    opts = "from isthmus import step, CachePolicy\n@step(retries=2, cache=CachePolicy(version='1'))\ndef f(x):\n"
    assert fp_of(tmp_path, opts + "    return x\n")[0] == plain
    other = "import functools\nfrom isthmus import step\n@step\n@functools.lru_cache\ndef f(x):\n    return x\n"
    assert fp_of(tmp_path, other)[0] != plain


def test_lambdas_in_a_container_are_told_apart_and_stable(tmp_path: Path) -> None:
    src = "OPS = {'a': lambda x: x * 2, 'b': lambda x: x * {V}}\ndef f(x):\n    return OPS['a'](x)\n"
    one, two, one_again = _variants(tmp_path, src, "3", "4", "3")
    assert one != two and one == one_again


def test_imports_inside_the_body_are_followed(tmp_path: Path) -> None:
    def helpers(factor: int) -> None:
        write_module(tmp_path, "fp_local_helpers", f"def double(x):\n    return x * {factor}\n")
        import_fresh(tmp_path, "fp_local_helpers")

    for body in (
        "def f(x):\n    from fp_local_helpers import double\n    return double(x)\n",
        "def f(x):\n    import fp_local_helpers\n    return fp_local_helpers.double(x)\n",
        "def f(x):\n    import fp_local_helpers as h\n    return h.double(x)\n",
        "class M:\n    def run(self, x):\n        from fp_local_helpers import double\n        return double(x)\n"
        "def f(x):\n    return M().run(x)\n",
    ):
        helpers(2)
        base, sources = fp_of(tmp_path, body)
        assert "double" in sources
        helpers(3)
        assert fp_of(tmp_path, body)[0] != base


def test_a_project_module_used_as_a_value_counts_whole(tmp_path: Path) -> None:
    body = "import fp_dispatch_ops\ndef f(name, x):\n    return getattr(fp_dispatch_ops, name)(x)\n"
    fps = []
    for ops in (
        "def a(x):\n    return x\nK = 1\n",
        "def a(x):\n    return -x\nK = 1\n",  # a function it holds
        "def a(x):\n    return -x\nK = 2\n",  # a constant it holds
        "def a(x):\n    return -x\nK = 2\nclass C:\n    pass\n",  # a class added
    ):
        write_module(tmp_path, "fp_dispatch_ops", ops)
        import_fresh(tmp_path, "fp_dispatch_ops")
        fps.append(fp_of(tmp_path, body, name="fp_dispatch_step")[0])
    assert len(set(fps)) == len(fps)
    # attribute chains alone do not pull in the whole module
    write_module(tmp_path, "fp_dispatch_ops", "def a(x):\n    return x\ndef b(x):\n    return x\n")
    import_fresh(tmp_path, "fp_dispatch_ops")
    _, sources = fp_of(tmp_path, "import fp_dispatch_ops\ndef f(x):\n    return fp_dispatch_ops.a(x)\n")
    assert "b" not in sources


def test_a_body_import_of_a_missing_project_module_counts_once_it_exists(tmp_path: Path) -> None:
    body = "def f(x):\n    try:\n        from fp_later import g\n    except ImportError:\n        return x\n"
    body += "    return g(x)\n"
    before, sources = fp_of(tmp_path, body)
    assert any("fp_later" in k for k in sources)
    write_module(tmp_path, "fp_later", "def g(x):\n    return -x\n")
    assert fp_of(tmp_path, body)[0] != before


def test_library_internals_stay_out(tmp_path: Path) -> None:
    src = "import json\nimport functools\nDUMP = functools.partial(json.dumps, sort_keys=True)\n"
    src += "def f(x):\n    return DUMP(x)\n"
    _, sources = fp_of(tmp_path, src)
    assert set(sources) == {"f", "f:DUMP"}


def test_classes_of_call_values_join_the_fingerprint(tmp_path: Path) -> None:
    write_module(tmp_path, "fp_arg_model", "class Model:\n    def predict(self, x):\n        return x\n")
    mod = import_fresh(tmp_path, "fp_arg_model")
    name = f"fpmod_{next(_counter)}"
    write_module(tmp_path, name, "def f(model):\n    return model.predict(1)\n")
    f = import_fresh(tmp_path, name).f
    clear_memo()
    plain = code_fingerprint(f)
    with_model = code_fingerprint(f, (mod.Model,))
    assert "Model" in with_model.sources and "Model" not in plain.sources
    assert with_model.hash != plain.hash


def test_state_without_a_canonical_form_is_unique_to_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = "import socket\nSOCK = socket.socket()\ndef f(x):\n    return SOCK.fileno()\n"
    mod = fresh_module(tmp_path, src)
    with caplog.at_level("WARNING", logger="isthmus"):
        fp = code_fingerprint(mod.f)
    assert list(fp.unstable) == ["f:SOCK"] and "no canonical state" in caplog.text
    assert "register_state" in caplog.text

    from isthmus.fingerprint import register_state
    from isthmus.fingerprint.values import _state_of

    register_state(type(mod.SOCK), lambda s: s.family.name)
    try:
        clear_memo()
        assert code_fingerprint(mod.f).unstable == {}
    finally:
        _state_of.pop(type(mod.SOCK))
    mod.SOCK.close()


def test_opaque_values_count_by_type_only(tmp_path: Path) -> None:
    src = "import threading, logging\nLOCK = threading.Lock()\nLOG = logging.getLogger('x')\n"
    src += "def f(x):\n    with LOCK:\n        LOG.info(x)\n"
    mod = fresh_module(tmp_path, src)
    unlocked = code_fingerprint(mod.f)
    assert unlocked.unstable == {}
    with mod.LOCK:
        clear_memo()
        assert code_fingerprint(mod.f).hash == unlocked.hash


# -- credentials -------------------------------------------------------------------------------------
def test_secret_constants_are_redacted_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FP_SERVICE_TOKEN", "tok-canary-123456")
    src = (
        "import os\nAPI_KEY = 'sk-canary-0001'\nAUTH = 'Bearer ' + os.environ['FP_SERVICE_TOKEN']\n"
        "CONF = {'password': 'pw-canary', 'host': 'db'}\nURL = 'postgresql://u:pw-canary-2@db/x'\nSCALE = 2\n"
        "def f(x):\n    return (API_KEY, AUTH, CONF, URL, SCALE)\n"
    )
    mod = fresh_module(tmp_path, src)
    fp = code_fingerprint(mod.f)
    shown = "\n".join(fp.sources.values())
    for canary in ("sk-canary-0001", "tok-canary-123456", "pw-canary"):
        assert canary not in shown
    assert fp.sources["f:API_KEY"] == "API_KEY = ***"
    assert fp.sources["f:CONF"] == "CONF = {'password': ***, 'host': 'db'}"
    assert fp.sources["f:SCALE"] == "SCALE = 2"
    assert set(fp.secret_digests) == {"f:API_KEY", "f:AUTH", "f:CONF", "f:URL"}
    # keyed: the same salt agrees, another salt (or no salt) reveals nothing comparable
    a, b = fp.keyed(b"a" * 32), fp.keyed(b"b" * 32)
    assert a.hash == fp.keyed(b"a" * 32).hash and a.hash != b.hash
    assert a.components["f:SCALE"] == b.components["f:SCALE"] and a.components["f:API_KEY"] != b.components["f:API_KEY"]
    # rotating the secret changes the key
    write_module(tmp_path, mod.__name__, src.replace("sk-canary-0001", "sk-canary-0002"))
    rotated = import_fresh(tmp_path, mod.__name__)
    clear_memo()
    assert code_fingerprint(rotated.f).keyed(b"a" * 32).hash != a.hash


def test_secret_literals_in_source_are_redacted_in_stored_text(tmp_path: Path) -> None:
    src = "def f(x):\n    token = 'lit-canary-77'\n    return call(x, password=1234, user='bob')\n"
    _, sources = fp_of(tmp_path, src)
    assert "lit-canary-77" not in sources["f"] and "token = ***" in sources["f"]
    assert "password=***" in sources["f"] and "user='bob'" in sources["f"]


def test_credentials_in_pairs_flags_setattr_and_connection_strings_are_redacted(tmp_path: Path) -> None:
    src = (
        "def f(obj):\n"
        "    pairs = [('password', 'pair-canary-148')]\n"
        "    setattr(obj, 'api_key', 'attr-canary-1234')\n"
        "    argv = ['prog', '--token', 'flag-canary-98765', '--host', 'db']\n"
        "    cols = ['user', 'password', 'host']\n"
        "    conn = 'Driver={ODBC};Uid=u;Pwd=odbc-canary-77;'\n"
        "    return pairs, argv, cols, conn\n"
    )
    _, sources = fp_of(tmp_path, src)
    text = sources["f"]
    assert not any(c in text for c in ("pair-canary", "attr-canary", "flag-canary", "odbc-canary")), text
    assert "['user', 'password', 'host']" in text and "'--host', 'db'" in text  # names are not credentials


def test_state_that_raises_when_read_never_crashes_a_fingerprint(tmp_path: Path) -> None:
    src = (
        "import dataclasses\n@dataclasses.dataclass\nclass C:\n    k: int = dataclasses.field(init=False)\n"
        "OBJ = C()\nclass Boom:\n    def __reduce_ex__(self, protocol):\n        raise RuntimeError('no')\n"
        "    def __repr__(self):\n        raise RuntimeError('no')\nB = Boom()\n"
        "def f(x):\n    return OBJ, B\n"
    )
    mod = fresh_module(tmp_path, src)
    fp = code_fingerprint(mod.f)
    assert set(fp.unstable) == {"f:OBJ", "f:B"}


# -- what the review broke: fast, in-process checks (the two-process proofs are in test_cache_correctness) --
@pytest.mark.parametrize(
    "template",
    [
        # set on the class after its body, and a method patched in
        "class M:\n    def k(self):\n        return self.F\nM.F = {V}\ndef f(x):\n    return M().k()\n",
        "class M:\n    pass\ndef _go(self):\n    return {V}\nM.go = _go\ndef f(x):\n    return M().go()\n",
        # two closures from one factory: the second one's cell counts too
        "def make(k):\n    def s(x):\n        return x * k\n    return s\nA = make(2)\nB = make({V})\n"
        "def f(x):\n    return A(x) + B(x)\n",
        # the namespace of the module, read by name
        "def g(x):\n    return x * {V}\ndef f(x):\n    return globals()['g'](x)\n",
        "import sys\ndef g(x):\n    return x * {V}\ndef f(x):\n    return getattr(sys.modules[__name__], 'g')(x)\n",
        # the branch of a class defined under if/else that Python ran
        "import sys\nif sys.platform == 'nope':\n    class C:\n        def go(self):\n            return 0\n"
        "else:\n    class C:\n        def go(self):\n            return {V}\ndef f(x):\n    return C().go()\n",
    ],
)
def test_reviewed_paths_count(tmp_path: Path, template: str) -> None:
    one, two, one_again = _variants(tmp_path, template, "2", "3", "2")
    assert one != two and one == one_again


def test_an_enum_members_value_counts(tmp_path: Path) -> None:
    data = tmp_path / "fp_enum_value.txt"
    src = "import enum\nfrom pathlib import Path\nclass E(enum.Enum):\n"
    src += f"    A = int(Path({str(data)!r}).read_text())\ndef f(x):\n    return E.A.value\n"
    hashes = []
    for value in ("2", "3"):  # the same source, another value computed when the module runs
        data.write_text(value)
        hashes.append(fp_of(tmp_path, src, name="fp_enum_mod")[0])
    assert hashes[0] != hashes[1]


def test_two_helpers_with_one_qualname_keep_their_own_constants(tmp_path: Path) -> None:
    write_module(tmp_path, "fp_twin_a", "K = 1\ndef helper(x):\n    return x * K\n")
    for k in (2, 3):
        write_module(tmp_path, "fp_twin_b", f"K = {k}\ndef helper(x):\n    return x * K\n")
        import_fresh(tmp_path, "fp_twin_a")
        import_fresh(tmp_path, "fp_twin_b")
        body = "import fp_twin_a, fp_twin_b\ndef f(x):\n    return fp_twin_a.helper(x) + fp_twin_b.helper(x)\n"
        fp_hash, sources = fp_of(tmp_path, body, name="fp_twin_step")
        assert "helper:K" in sources and any(k.startswith("fp_twin_b.helper:K") for k in sources)
        if k == 2:
            first = fp_hash
    assert fp_hash != first


def test_set_members_are_hashed_in_an_order_given_by_their_content(tmp_path: Path) -> None:
    src = (
        "class N:\n    def __init__(self, name):\n        self.name = name\n        self.peers = []\n"
        "RING = [N(c) for c in 'abcdef']\nfor i, n in enumerate(RING):\n    n.peers.append(RING[(i + 1) % 6])\n"
        "FNS = [lambda x: x + 1, lambda x: x * 2, lambda x: x - 3]\n"
        "GRAPH = set(RING)\nOPS = set(FNS)\ndef f(x):\n    return GRAPH, OPS\n"
    )
    mod = fresh_module(tmp_path, src)
    first = code_fingerprint(mod.f)
    for order in (list(reversed(mod.RING)), mod.RING[3:] + mod.RING[:3]):
        mod.GRAPH = set()
        for n in order:  # the same members, inserted in another order (another iteration order)
            mod.GRAPH.add(n)
        mod.OPS = set(reversed(mod.FNS))
        clear_memo()
        again = code_fingerprint(mod.f)
        assert again.hash == first.hash and again.sources == first.sources


def test_big_constants_are_rendered_within_a_budget(tmp_path: Path) -> None:
    import time

    src = "BLOB = b'x' * (8 << 20)\nTEXT = 'y' * (8 << 20)\nROWS = [{'id': i, 'name': str(i)} for i in range(50_000)]\n"
    src += "def f(x):\n    return BLOB[x], TEXT[x], ROWS[x]\n"
    mod = fresh_module(tmp_path, src)
    t0 = time.perf_counter()
    fp = code_fingerprint(mod.f)
    elapsed = time.perf_counter() - t0
    assert fp.unstable == {}
    assert all(len(text) < 2200 for text in fp.sources.values())
    assert elapsed < 30  # a generous bound only against the old minutes-long behaviour; bench/ measures


def test_stale_loaded_code_is_unique_to_the_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mod = fresh_module(tmp_path, "def f(x):\n    return x * 3\n")
    clean = code_fingerprint(mod.f)
    assert clean.unstable == {}
    (tmp_path / f"{mod.__name__}.py").write_text("def f(x):\n    return x * 4\n")  # edited after the import
    clear_memo()
    with caplog.at_level("WARNING", logger="isthmus"):
        stale = code_fingerprint(mod.f)
    assert "f" in stale.unstable and "does not match its source" in caplog.text
    assert stale.components["f"] != clean.components["f"]


def test_a_namespace_package_is_part_of_the_project(tmp_path: Path) -> None:
    pkg = tmp_path / "fp_nspkg"
    pkg.mkdir()
    body = "import fp_nspkg.helpers\ndef f(x):\n    return fp_nspkg.helpers.double(x)\n"
    hashes = []
    for factor in (2, 3):
        (pkg / "helpers.py").write_text(f"def double(x):\n    return x * {factor}\n")
        sys.modules.pop("fp_nspkg.helpers", None)
        sys.modules.pop("fp_nspkg", None)
        fp_hash, sources = fp_of(tmp_path, body, name="fp_ns_step")
        assert "double" in sources
        hashes.append(fp_hash)
    assert hashes[0] != hashes[1]


@pytest.mark.parametrize(
    ("line", "canary"),
    [
        ("    token = 'lit-canary-1'\n", "lit-canary-1"),  # the first line of a body after an annotation
        ("    headers = {'Authorization': 'Bearer lit-canary-2'}\n", "lit-canary-2"),
        ("    api_key = '''lit-canary-3'''\n", "lit-canary-3"),
        ("    password = ('lit-canary-' '4')\n", "lit-canary-"),
        ("    if (token := 'lit-canary-5'):\n        pass\n", "lit-canary-5"),
        ("    secret = f'lit-canary-6-{x}'\n", "lit-canary-6"),
        ("    key = os.getenv('SOME_TOKEN', 'lit-canary-7')\n", "lit-canary-7"),
        ("    self_conf = {}\n    self_conf['password'] = 'lit-canary-8'\n", "lit-canary-8"),
        ("    c = Creds('admin', 'lit-canary-9')\n", "lit-canary-9"),  # positional, to a field 'password'
        ("    x += 1  # password = 'lit-canary-10'\n", "lit-canary-10"),  # in a comment
    ],
)
def test_secret_literals_are_redacted_in_any_layout(tmp_path: Path, line: str, canary: str) -> None:
    src = "import os\nfrom typing import NamedTuple\nclass Creds(NamedTuple):\n    user: str\n    password: str\n"
    src += "def f(x: int, api_key: str = 'lit-canary-11') -> int:\n" + line + "    return x\n"
    _, sources = fp_of(tmp_path, src)
    assert canary not in sources["f"] and "lit-canary-11" not in sources["f"], sources["f"]
    assert "***" in sources["f"]


def test_rendered_constants_hide_secret_fields_and_encodings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FP_RENDER_TOKEN", "tok-render-canary-1")
    src = (
        "import os, base64\nfrom typing import NamedTuple\nclass Creds(NamedTuple):\n    user: str\n"
        "    password: str\nDB = Creds('admin', 'nt-canary-1')\nDB_CREDS = ('admin', 'tuple-canary-1')\n"
        "BASIC = 'Basic ' + base64.b64encode(('u:' + os.environ['FP_RENDER_TOKEN']).encode()).decode()\n"
        "FALLBACK = os.getenv('FP_UNSET_PASSWORD', 'getenv-canary-1')\n"
        "def f(x):\n    return DB, DB_CREDS, BASIC, FALLBACK\n"
    )
    mod = fresh_module(tmp_path, src)
    fp = code_fingerprint(mod.f)
    shown = "\n".join(fp.sources.values())
    for canary in ("nt-canary-1", "tuple-canary-1", "getenv-canary-1", mod.BASIC.split()[1]):
        assert canary not in shown, canary
    assert fp.sources["f:DB"] == "DB = Creds(user='admin', password=***)"
    assert {"f:DB", "f:DB_CREDS", "f:BASIC", "f:FALLBACK"} <= set(fp.secret_digests)


def test_a_refs_type_path_never_imports_a_module_outside_the_project(tmp_path: Path) -> None:
    """``python_type`` travels on untrusted refs: resolving it for the key imports project modules only
    (a dotted name's parent packages are not imported to find it)."""
    import json
    import subprocess

    from tests.helpers import REPO

    script = (
        "import json, sys\n"
        "from isthmus.artifacts.refs import ArtifactRef\n"
        "from isthmus.fingerprint.arguments import code_of_ref\n"
        "names = ['this:X', 'venv.__main__.x:X', 'antigravity:X', 'http.server:X']\n"
        "for name in names:\n"
        "    ref = ArtifactRef(uri='file:///x', content_hash='blake3:' + '0' * 64, size=1,\n"
        "                      materializer='json@1', python_type=name)\n"
        "    code_of_ref(ref)\n"
        "print(json.dumps(sorted(m for m in ('this', 'venv', 'antigravity', 'http.server') if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "ISTHMUS_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert "The Zen of Python" not in proc.stdout and "usage:" not in proc.stderr
