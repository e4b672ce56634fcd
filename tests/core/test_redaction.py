"""Redaction helpers: secret-looking names, URL credentials, nested params and free-text scrubbing."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from isthmus.redaction import REDACTED, is_secret_name, redact_params, redact_url, scrub, secret_values

fast = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PASSWORD",
        "db_password",
        "DB_PWD",
        "passwd",
        "api_key",
        "apiKey",
        "APIKEY",
        "AWS_SECRET_ACCESS_KEY",
        "client_secret",
        "GITHUB_TOKEN",
        "access-token",
        "auth",
        "Authorization",
        "private_key",
        "ssl_cert",
        "session_cookie",
        "SENTRY_DSN",
        "conn_str",
        "passphrase",
        "credentials",
        "PassWord",
        "myTokenizerSecret",  # an ordinary word next to a secret one
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "learning_rate",
        "host",
        "n_estimators",
        "user",
        "DATABASE_URL",  # its value is URL-redacted instead
        "PWD",  # the working directory
        "OLDPWD",
        "SSH_AUTH_SOCK",
        "XDG_SESSION_TYPE",
        "tokenizer",  # a model object
        "tokenizer_name",
        "author",
        "keywords",
        "uncertainty",
    ],
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://admin:hunter2@db.local:5432/app", "postgresql://admin:***@db.local:5432/app"),
        ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgres://user:p@ss@host/db", "postgres://user:***@host/db"),  # '@' in the password
        ("s3://AKIA:ab/c+d@bucket/key", "s3://AKIA:***@bucket/key"),  # '/' in the password
        ("mysql://u:p?w@h/d", "mysql://u:***@h/d"),
        ("mysql://u:p@s/s@h/d", "mysql://u:***@h/d"),  # '@' and '/' in the password
        ("https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://x.com/a?b=1&token=zzz&api_key=k#frag", "https://x.com/a?b=1&token=***&api_key=***#frag"),
        (
            "https://acct.blob.core.windows.net/c/x?sv=2020&sig=AbC%3D",
            "https://acct.blob.core.windows.net/c/x?sv=2020&sig=***",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Expires=60",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(f"error connecting to '{url}' (timeout)") == f"error connecting to '{expected}' (timeout)"


@pytest.mark.parametrize(
    "text",
    [
        "ssh://git@github.com/org/repo.git",
        "https://github.com/org/repo.git",
        "https://host:8080/path/@me",
        "https://host/path@v2",
        "s3://bucket/key?versionId=3",
        "no url at all: user:pass@host",
        "",
    ],
)
def test_redact_url_leaves_credential_free_text_alone(text: str) -> None:
    assert redact_url(text) == text


@fast
@given(
    st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12),
    st.text(
        alphabet=st.characters(blacklist_categories=["Z", "C"], blacklist_characters="'\"<>`"), min_size=1, max_size=24
    ),
    st.sampled_from(["db.example.com:5432/app", "h", "h/x?y=1", "h#frag"]),
)
def test_redact_url_never_leaks_a_password(user: str, password: str, tail: str) -> None:
    # 'user:123/x@host' reads as host 'user', port 123: the one form that cannot be told apart
    head = re.split(r"[/?#]", password, maxsplit=1)[0]
    assume(not (head.isdigit() and head != password))
    out = redact_url(f"postgresql://{user}:{password}@{tail}")
    assert out == f"postgresql://{user}:***@{tail}"


def test_redact_params_nested() -> None:
    params = {
        "host": "db.local",
        "password": "hunter2",
        "retries": 3,
        "db": {"url": "postgresql://u:pw@h/x", "api_key": "k", "opts": {"token": ["a", "b"], "timeout": 5}},
        "servers": [{"name": "a", "secret": "s"}, "redis://:pw@r:6379"],
        "pair": ("x", "mysql://u:p@h/d"),
        "none": None,
    }
    out = redact_params(params)
    assert out == {
        "host": "db.local",
        "password": REDACTED,
        "retries": 3,
        "db": {"url": "postgresql://u:***@h/x", "api_key": REDACTED, "opts": {"token": REDACTED, "timeout": 5}},
        "servers": [{"name": "a", "secret": REDACTED}, "redis://:***@r:6379"],
        "pair": ["x", "mysql://u:***@h/d"],
        "none": None,
    }
    assert params["password"] == "hunter2"  # a copy: the input is untouched
    assert params["db"]["api_key"] == "k"


def test_secret_values_and_scrub() -> None:
    env = {"API_TOKEN": "tok-123456", "HOME": "/root", "PWD": "/work/main", "SHORT_KEY": "abc"}
    found = secret_values({"password": "hunter22", "nested": {"client_secret": b"bytes-secret"}, "x": 1}, env)
    assert found == {"hunter22", "tok-123456", "bytes-secret"}
    text = 'File "/work/main/app.py": login hunter22 failed with tok-123456 at postgres://u:other@h/db'
    out = scrub(text, found)
    assert "hunter22" not in out and "tok-123456" not in out and "other" not in out
    assert "/work/main/app.py" in out  # the working directory is not a secret
    assert out.count(REDACTED) == 3


def test_scrub_replaces_longest_secrets_first() -> None:
    assert scrub("abcdef abc", ["abc", "abcdef"]) == "*** ***"
    assert scrub("nothing here", []) == "nothing here"
    assert scrub("x", [""]) == "x"
