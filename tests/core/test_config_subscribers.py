"""isthmus.config is a leaf: it names no cache it resets; the modules holding caches subscribe."""

from __future__ import annotations

import ast
from pathlib import Path

import isthmus
from isthmus import config, defaults

LEAVES = {"isthmus.errors", "isthmus.hashing", "isthmus.redaction"}


def _isthmus_imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("isthmus"):
            out.add(node.module or "")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("isthmus"))
    return out


def test_config_imports_only_leaf_modules_which_import_no_isthmus_module() -> None:
    """config imports only leaves: modules that import no isthmus module but each other (the exception
    tree, which imports nothing of isthmus)."""
    root = Path(isthmus.__file__).parent
    assert _isthmus_imports(root / "config.py") <= LEAVES
    assert not _isthmus_imports(root / "errors.py")
    for leaf in LEAVES:
        assert _isthmus_imports(root / f"{leaf.split('.')[1]}.py") <= {"isthmus.errors"}, leaf


def test_configure_and_reset_call_the_subscribers(tmp_path: Path) -> None:
    calls: list[str] = []

    def remember() -> None:
        calls.append("changed")

    assert config.on_change(remember) is remember
    config.on_change(remember)  # twice: called once per change
    try:
        store = defaults.metadata_store()
        config.configure(home=tmp_path / "a")
        assert calls == ["changed"]
        assert defaults.metadata_store() is not store  # the default stores subscribe
        config.reset()
        assert calls == ["changed", "changed"]
    finally:
        config._subscribers.remove(remember)
        config.reset()
