"""``isthmus reproduce``: call a recorded step run's function again, in this process, with its exact
recorded inputs and parameters — to debug a failure wherever it was recorded (local, Airflow, Flyte).

The inputs are the refs the step run recorded (a list argument as ``name[0]``, ``name[1]`` …; a pinned
input as the version it resolved to), loaded only through the artifact store, which checks each ref
and its bytes. The step is imported by its ``step_path``. Nothing is recorded and no cache changes.
What may make the call differ from the recorded one is reported: the Python version, the versions of
the packages the step imports, the git commit of its code, and the functions whose code changed.
"""

from __future__ import annotations

import os
import pdb
import platform
import re
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.config import get_settings
from isthmus.errors import ArtifactMissing, ReplayError
from isthmus.fingerprint.arguments import INCOMPLETE_CODE, NotListed, NotPlain, code_of_ref, code_of_value, plain_form
from isthmus.fingerprint.code import code_fingerprint
from isthmus.fingerprint.deps import dependency_fingerprint
from isthmus.fingerprint.environment import git_info
from isthmus.fingerprint.files import path_digest
from isthmus.fingerprint.redact import traceback_secret_literals
from isthmus.metadata_log import collecting
from isthmus.recorded_params import replay_params
from isthmus.records import StepRunRecord
from isthmus.redaction import resolved_secrets, scrub, secret_values
from isthmus.step import Step, load_step
from isthmus.store.metadata import MetadataStore

_ITEM = re.compile(r"(?P<name>[A-Za-z_]\w*)\[(?P<index>\d+)\]")


@dataclass(frozen=True)
class Difference:
    """One way this process differs from where the step run ran: ``kind`` is ``python``, ``package``,
    ``git``, ``code`` or ``file``; ``name`` what differs (a package, ``commit``, a function, a path
    parameter)."""

    kind: str
    name: str
    recorded: Any
    now: Any


@dataclass
class Reproduction:
    """The outcome of calling a recorded step run's function again."""

    step_run_id: str
    invocation: str
    step_path: str
    recorded_status: str
    recorded_error: str | None
    inputs: dict[str, str]  # argument -> content hash of what was loaded (``name[i]`` for list items)
    differences: list[Difference]
    value: Any = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    error_text: str | None = None  # "Type: message", secrets given with --param hidden
    traceback_text: str | None = None  # formatted; those secrets, and any in its source lines, hidden

    @property
    def raised(self) -> bool:
        return self.error is not None

    @property
    def reproduced(self) -> bool:
        """The call ended as the recorded one did: raised for a FAILED run, returned for a COMPLETED one."""
        return self.raised == (self.recorded_status == "FAILED")

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_run_id": self.step_run_id,
            "invocation": self.invocation,
            "step_path": self.step_path,
            "recorded_status": self.recorded_status,
            "recorded_error": self.recorded_error,
            "inputs": self.inputs,
            "differences": [vars(d) for d in self.differences],
            "raised": self.error_text,
            "reproduced": self.reproduced,
        }


def recorded_inputs(step_run: StepRunRecord) -> tuple[dict[str, ArtifactRef], dict[str, int]]:
    """The input refs of ``step_run`` by argument (``name[i]`` kept as recorded) and its list arguments
    with their lengths; :class:`ReplayError` for a malformed record."""
    refs: dict[str, ArtifactRef] = {}
    lists: dict[str, set[int]] = {}
    where = f"step run {str(step_run['id'])[:8]}"
    for name, data in (step_run.get("inputs") or {}).items():
        try:
            ref = ArtifactRef.from_dict(data) if isinstance(data, dict) else None
        except InvalidArtifactRef as exc:
            raise ReplayError(f"{where}: input {str(name)[:60]!r} is not a valid artifact ref ({exc})") from None
        if ref is None:
            raise ReplayError(f"{where}: input {str(name)[:60]!r} is not an artifact ref")
        item = _ITEM.fullmatch(name)
        if item is not None:
            lists.setdefault(item["name"], set()).add(int(item["index"]))
        elif not str(name).isidentifier():
            raise ReplayError(f"{where}: input {str(name)[:60]!r} is not an argument name")
        refs[name] = ref
    lengths: dict[str, int] = {}
    for name, indexes in lists.items():
        if indexes != set(range(len(indexes))) or name in refs:
            raise ReplayError(f"{where}: list input {name!r} is recorded with gaps (items {sorted(indexes)})")
        lengths[name] = len(indexes)
    return refs, lengths


def _load(
    metadata: MetadataStore, artifacts: ArtifactStore, refs: Mapping[str, ArtifactRef], lengths: Mapping[str, int]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, ref in refs.items():
        try:
            artifacts.check_ref(ref)
        except InvalidArtifactRef as exc:
            raise ReplayError(f"input {name!r}: {exc}") from None
        if not artifacts.is_valid(ref):
            deleted = not metadata.artifacts_by_hash([ref.content_hash], ["content_hash"])
            raise ArtifactMissing(
                f"input {name!r} ({ref.content_hash[:19]}…) "
                + ("was deleted from this store (gc)" if deleted else f"is missing or corrupt at {ref.uri}")
                + "; it cannot be reproduced (re-run the step that produced it with 'isthmus rerun')"
            )
        values[name] = artifacts.load(ref)
    for name, n in lengths.items():
        values[name] = [values.pop(f"{name}[{i}]") for i in range(n)]
    return values


def _code_now(step: Step[Any, Any], params: Mapping[str, Any], refs: Mapping[str, ArtifactRef]) -> set[Any]:
    """The project code the call's values reference, as the runner adds it to the code fingerprint."""
    code: set[Any] = set()
    for value in params.values():
        try:
            plain_form(value, code)
        except NotPlain:
            try:
                code |= code_of_value(value)
            except NotListed:
                pass
    for ref in refs.values():
        code |= code_of_ref(ref)
    code.discard(INCOMPLETE_CODE)
    return code


def _files(values: dict[str, Any]) -> list[Difference]:
    """Turn the parameters recorded as a path and what was at it (``{"path", "content_hash"}``) back into
    paths; what is at one of them now, when different, is a difference (``file``)."""
    found: list[Difference] = []
    for name, value in values.items():
        if isinstance(value, dict) and set(value) == {"path", "content_hash"} and isinstance(value["path"], str):
            values[name] = Path(value["path"])
            now = path_digest(value["path"])
            if now != value["content_hash"]:
                found.append(Difference("file", name, str(value["content_hash"]), now))
    return found


def differences(
    metadata: MetadataStore, step_run: StepRunRecord, step: Step[Any, Any], code: set[Any]
) -> list[Difference]:
    """How this process differs from the one that ran ``step_run``: Python, packages, git, code."""
    out: list[Difference] = []
    env_hash, code_hash = step_run.get("environment_hash"), step_run.get("code_hash")
    env = (metadata.get_environment(env_hash) if env_hash else None) or {}
    python = (env.get("python") or {}).get("version")
    if python and python != platform.python_version():
        out.append(Difference("python", "version", python, platform.python_version()))
    code_fp = code_fingerprint(step, tuple(sorted(code, key=lambda c: (c.__module__, c.__qualname__))))
    if code_fp.secret_digests:
        code_fp = code_fp.keyed(get_settings().secret_salt or metadata.secret_salt())
    recorded_deps = step_run.get("deps") or {}
    deps_now = dependency_fingerprint(step.cache.deps, code_fp.modules).versions
    for name in sorted(set(recorded_deps) | set(deps_now)):
        if recorded_deps.get(name) != deps_now.get(name):
            out.append(Difference("package", name, recorded_deps.get(name), deps_now.get(name)))
    git = env.get("git") or {}
    if git.get("commit"):
        path = getattr(sys.modules.get(step.fn.__module__), "__file__", None)
        now = git_info(os.path.dirname(path)) if path else None
        if (now or {}).get("commit") != git["commit"]:
            out.append(Difference("git", "commit", git["commit"], (now or {}).get("commit")))
    if code_hash and code_hash != code_fp.hash:
        snapshot = metadata.get_code_snapshot(code_hash) or {}
        before = snapshot.get("components") or {}
        for name in sorted(set(before) | set(code_fp.components)):
            if before.get(name) != code_fp.components.get(name):
                state = "changed" if name in before and name in code_fp.components else "added"
                state = "removed" if name not in code_fp.components else state
                out.append(Difference("code", name, code_hash[:12], state))
        if not any(d.kind == "code" for d in out):  # a snapshot of another shape: name the step
            out.append(Difference("code", step.name, code_hash[:12], code_fp.hash[:12]))
    return out


def _call_arguments(step: Step[Any, Any], arguments: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """``arguments`` split as :meth:`Step.invoke` passes them (positional-only ones by position)."""
    positional, keywords = [], {}
    for name, param in step.signature.parameters.items():
        if name in arguments:
            if param.kind is param.POSITIONAL_ONLY:
                positional.append(arguments[name])
            else:
                keywords[name] = arguments[name]
    return positional, keywords


def reproduce(
    metadata: MetadataStore,
    artifacts: ArtifactStore,
    step_run: StepRunRecord,
    *,
    params: Mapping[str, Any] | None = None,
    debug: bool = False,
) -> Reproduction:
    """Call ``step_run``'s step function with its recorded inputs and parameters (``params`` over them;
    a recorded ``***`` must be given) under ``pdb.runcall`` when ``debug``. An exception the function
    raises is returned in :attr:`Reproduction.error`, not raised."""
    where = f"step run {str(step_run['id'])[:8]} ({step_run['invocation']})"
    step = load_step(str(step_run["step_path"]))
    given = dict(params or {})
    values = replay_params(step_run.get("params"), given, what=where)
    refs, lengths = recorded_inputs(step_run)
    overlap = sorted(set(values) & (set(refs) | set(lengths)))
    if overlap:
        raise ReplayError(f"{where}: {', '.join(overlap)} are recorded inputs (artifacts), not parameters")
    unknown = sorted(set(values) - set(step.signature.parameters))
    if unknown:
        raise ReplayError(f"{where}: step {step.name!r} takes no parameter(s) {', '.join(unknown)}")
    found = _files(values)
    found += differences(metadata, step_run, step, _code_now(step, values, refs))
    arguments = {**values, **_load(metadata, artifacts, refs, lengths)}
    outcome = Reproduction(
        step_run_id=str(step_run["id"]),
        invocation=str(step_run["invocation"]),
        step_path=str(step_run["step_path"]),
        recorded_status=str(step_run["status"]),
        recorded_error=step_run.get("error"),
        inputs={name: ref.content_hash for name, ref in refs.items()},
        differences=found,
    )
    positional, keywords = _call_arguments(step, arguments)
    try:
        with collecting(step.name, step.output_names, frozenset()):  # log_metadata works, records nothing
            if debug:  # the debugger stops at the step function's first line
                outcome.value = pdb.runcall(step.fn, *positional, **keywords)
            else:
                outcome.value = step.fn(*positional, **keywords)
    except Exception as exc:
        outcome.error = exc
        # as the runner records a failure: the source lines a traceback shows may hold credentials too
        shown = secret_values(given) | traceback_secret_literals(exc.__traceback__) | resolved_secrets()
        outcome.error_text = scrub(f"{type(exc).__name__}: {exc}", shown)
        outcome.traceback_text = scrub("".join(traceback.format_exception(exc)), shown)
    return outcome
