"""Secret parameters of a step that runs in another process (a Slurm job).

A parameter that holds a secret — secret-named, a ``SecretStr``/``SecretBytes``, text holding a secret
the caller knows about (a DAG's or workflow's secret parameter feeding it) — never travels on the job's
command line, in its batch script, or as an input artifact: it goes to the job in one environment
variable, ``ISTHMUS_SECRET_PARAMS``, set from the job's 0600 credentials file, which the job takes out of
its environment before the step runs. Only text, JSON data and pydantic secret types can travel this
way; an object holding a secret is refused with the fix.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from isthmus.errors import IsthmusError, StepDefinitionError
from isthmus.fingerprint.arguments import NotPlain, plain_form
from isthmus.redaction import find_secret, is_secret_name, is_secret_object, secret_env_values, secret_values

SECRET_PARAMS_ENV = "ISTHMUS_SECRET_PARAMS"
_KINDS = ("plain", "secret_str", "secret_bytes")
_MAX_CHARS = 100_000  # Linux refuses to start a program with one environment string over 128 KiB


def call_secrets(arguments: Mapping[str, Any], secrets: Iterable[str] = ()) -> frozenset[str]:
    """The secrets a call knows: ``secrets`` given with it, those its arguments show (by name, type or
    form: a token, a URL password) and the environment's."""
    return frozenset(
        s for s in {*secrets, *secret_values(arguments, {}), *secret_env_values()} if isinstance(s, str) and len(s) >= 4
    )


def secret_param_names(arguments: Mapping[str, Any], secrets: Iterable[str] = ()) -> set[str]:
    """The arguments that hold a secret: secret-named ones holding text, secret types or secret-named
    fields anywhere, and text that is or holds a secret known to the call (:func:`call_secrets`)."""
    known = call_secrets(arguments, secrets)
    found: set[str] = set()
    for name, value in arguments.items():
        if isinstance(value, (int, float, bool)) or value is None:
            continue
        if is_secret_name(name) or find_secret(value, known, by_key=True) is not None:
            found.add(name)
    return found


def encode_secret_params(step_name: str, params: Mapping[str, Any]) -> str:
    """The text of ``ISTHMUS_SECRET_PARAMS`` for ``params``; a value that is neither JSON data nor a
    pydantic secret type raises StepDefinitionError naming the parameter and the fix."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_secret_object(value):
            inner = value.get_secret_value()
            if isinstance(inner, str):
                out[name] = {"secret_str": inner}
                continue
            if isinstance(inner, bytes):
                out[name] = {"secret_bytes": base64.b64encode(inner).decode()}
                continue
        else:
            try:
                out[name] = {"plain": plain_form(value, paths=False)}
                continue
            except NotPlain:
                pass
        raise StepDefinitionError(
            f"step {step_name!r}: parameter {name!r} holds a secret inside a {type(value).__qualname__}, which a "
            "job in another process could only receive as a stored artifact; pass the secret as its own "
            "parameter (text or a pydantic SecretStr) and build the object inside the step"
        )
    text = json.dumps(out, sort_keys=True)
    if len(text) > _MAX_CHARS:
        raise StepDefinitionError(
            f"step {step_name!r}: the secret parameters {', '.join(sorted(params))} take {len(text)} characters, more "
            f"than the {_MAX_CHARS} one environment variable may hold; pass a smaller secret (a token, a key) and "
            "fetch the rest inside the step"
        )
    return text


def secret_params_from_env(environ: MutableMapping[str, str] | None = None) -> dict[str, Any]:
    """The secret parameters this job was given, taken out of the environment (the step, and anything it
    starts, never sees the variable). Malformed text raises IsthmusError in one line."""
    environ = os.environ if environ is None else environ
    text = environ.pop(SECRET_PARAMS_ENV, None)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise IsthmusError(
            f"{SECRET_PARAMS_ENV}: not a JSON object of parameters; the job's credentials file is damaged"
        )
    params: dict[str, Any] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in _KINDS:
            raise IsthmusError(
                f"{SECRET_PARAMS_ENV}: parameter {name!r:.100} is not one of {', '.join(_KINDS)}; "
                "the job's credentials file is damaged"
            )
        params[name] = _revive(name, *next(iter(entry.items())))
    return params


def _revive(name: str, kind: str, value: Any) -> Any:
    if kind == "plain":
        return value
    if not isinstance(value, str):
        raise IsthmusError(f"{SECRET_PARAMS_ENV}: parameter {name!r:.100}: {kind} is not text")
    from pydantic import SecretBytes, SecretStr  # pydantic is imported only by jobs given a secret type

    if kind == "secret_str":
        return SecretStr(value)
    try:
        return SecretBytes(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise IsthmusError(f"{SECRET_PARAMS_ENV}: parameter {name!r:.100}: secret_bytes is not base64") from None


def secret_texts(params: Mapping[str, Any]) -> frozenset[str]:
    """Every text the secret parameters hold (revealed): the secrets a run of the step is given."""
    found: set[str] = set()

    def visit(value: Any) -> None:
        if is_secret_object(value):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return
        if isinstance(value, str):
            if len(value) >= 4:
                found.add(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for v in params.values():
        visit(v)
    return frozenset(found)
