"""Redaction helpers: secret-looking names, URL credentials, nested params and free-text scrubbing."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from isthmus.redaction import (
    REDACTED,
    find_secret,
    is_secret_env,
    is_secret_name,
    known_secrets_in,
    looks_like_credential,
    redact_params,
    redact_text,
    redact_url,
    reveal_secrets,
    safe_params,
    scrub,
    secret_values,
    secrets_in,
    shown_secrets,
)

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
        "pwd",  # a parameter: only the environment variable PWD is the working directory
        "pass_phrase",  # a secret word written in parts
        "passPhrase",
        "pass_word",
        "db_pass",
        "pw",
        "DB_CREDS",
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
        "bypass",
        "compass",
        "n_passes",
        "icon_name",
    ],
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_the_environment_secrets_are_computed_in_one_place() -> None:
    from isthmus.redaction import secret_env_values

    env = {
        "PWD": "/work/main",
        "MY_TOKEN": "tok-123456",
        "ISTHMUS_STORE_URL": "postgresql://u:pg-secret-1@db/x",
        "SHORT_KEY": "abc",
        "HOME": "/root",
    }
    assert secret_env_values(env) == {"tok-123456", "pg-secret-1"}
    assert secret_values({}, env) == {"tok-123456", "pg-secret-1"}


def test_secret_strings_are_recognised_in_their_usual_spellings() -> None:
    import base64

    from isthmus.redaction import is_secret_string

    token = "tok-canary-123456"
    header = "Basic " + base64.b64encode(f"someone:{token}".encode()).decode()
    assert is_secret_string(token, [token]) and is_secret_string(f"x{token}y", [token])
    assert is_secret_string(base64.b64encode(f"u:{token}".encode()).decode(), [token])  # any alignment
    assert is_secret_string(header) and is_secret_string("Bearer abcdef123")  # an Authorization value
    assert is_secret_string("postgresql://u:pw@h/db")
    assert not is_secret_string("Invalid token provided") and not is_secret_string("tok", [token])
    encoded = base64.b64encode(f"user:{token}".encode()).decode()
    assert encoded not in scrub(f"auth: {encoded}", [token])


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


# -- secrets by type, header pairs, bearer tokens, object parameters --------------------------------------
def test_secret_values_find_secrets_at_any_depth_and_in_any_form() -> None:
    import dataclasses

    from pydantic import BaseModel, SecretBytes, SecretStr

    @dataclasses.dataclass
    class Api:
        url: str
        api_key: str

    class Db(BaseModel):
        host: str
        password: SecretStr

    class Client:  # a plain object: its secret-typed attributes count
        def __init__(self) -> None:
            self.creds = SecretStr("plain-object-secret")
            self.token_pattern = r"\w+"  # an ordinary attribute with a secret-looking name

    basic = "dXNlcjpiYXNpYy1wYXNzd29yZA=="  # user:basic-password
    params = {
        "headers": [["Authorization", "Bearer bearer-token-123"], ["Accept", "text/plain"]],
        "proxy": ("Proxy-Authorization", f"Basic {basic}"),
        "api": Api("https://u:url-password@api/x", "dataclass-key"),
        "db": Db(host="h", password=SecretStr("model-secret")),
        "blob": SecretBytes(b"secret-bytes"),
        "client": Client(),
        "deep": {"level": [{"tokens": ["listed-token-1", "listed-token-2"]}]},
        "text": "curl -H 'Authorization: Bearer inline-token-9'",
    }
    found = secret_values(params, {})
    for secret in (
        "bearer-token-123",
        "basic-password",
        "url-password",
        "dataclass-key",
        "model-secret",
        "secret-bytes",
        "plain-object-secret",
        "listed-token-1",
        "inline-token-9",
    ):
        assert secret in found, secret
    assert "text/plain" not in found and r"\w+" not in found


def test_scrub_catches_escaped_and_quoted_spellings_and_bearer_tokens() -> None:
    secret = "p@ss'wo/rd\\x"
    text = f"raw {secret} repr {secret!r} json {json.dumps(secret)} url {quote(secret, safe='')}"
    out = scrub(text, [secret])
    assert "p@ss" not in out and "wo/rd" not in out and "wo%2Frd" not in out, out
    assert scrub("401: Authorization: Bearer abcdef123456", []) == "401: Authorization: ***"
    assert scrub("sent Bearer abcdef123456 twice", []) == "sent Bearer *** twice"
    assert scrub("a Bearer of news", []) == "a Bearer of news"  # too short to be a token


def test_redact_params_hides_header_pairs_and_bearer_tokens() -> None:
    params = {
        "headers": [["Authorization", "Bearer abcdef123456"], ["Accept", "application/json"]],
        "h": ("X-Api-Key", "k-123456"),
        "note": "use Bearer abcdef123456",
        "url": "https://x/?q=1",
    }
    assert redact_params(params, ["zzz-known"]) == {
        "headers": [["Authorization", REDACTED], ["Accept", "application/json"]],
        "h": ["X-Api-Key", REDACTED],
        "note": "use Bearer ***",
        "url": "https://x/?q=1",
    }
    assert redact_params({"msg": "value zzz-known-secret here"}, ["zzz-known-secret"]) == {"msg": "value *** here"}


def test_find_secret_by_type_field_header_and_value() -> None:
    import dataclasses
    from typing import NamedTuple

    from pydantic import BaseModel, SecretStr

    @dataclasses.dataclass
    class Conf:
        password: str
        password_length: int = 0

    class Creds(NamedTuple):
        user: str
        token: str

    class Model(BaseModel):
        name: str
        api_key: str = ""

    assert find_secret(SecretStr("x")) == ("", "a pydantic.types.SecretStr")
    assert find_secret({"a": [1, {"b": SecretStr("x")}]}) == ("['a'][1]['b']", "a pydantic.types.SecretStr")
    assert find_secret(Conf("pw")) == (".password", "a secret-named field")
    assert find_secret(Creds("u", "t")) == (".token", "a secret-named field")
    assert find_secret(Model(name="m", api_key="k")) == (".api_key", "a secret-named field")
    assert find_secret(Model(name="m")) is None  # an empty field holds nothing
    assert find_secret(["Authorization", "Bearer x"]) == ("[1]", "an authorization header")
    assert find_secret({"echo": "the value known-secret-1 here"}, ["known-secret-1"]) is not None
    # ordinary data: secret-looking keys of plain dicts count only where asked (parameters, not outputs)
    assert find_secret({"password_length": 10, "tokens": ["a", "b"]}) is None
    assert find_secret({"token": "abc"}) is None and find_secret({"token": "abc"}, by_key=True) is not None
    assert find_secret(list(range(100_000))) is None  # scanned whole, in linear time


def test_safe_params_never_store_a_repr() -> None:
    import dataclasses

    from pydantic import SecretStr

    @dataclasses.dataclass
    class Settings:
        url: str
        api_key: str

    class Opaque:
        def __repr__(self) -> str:
            return "Opaque(secret=repr-leak)"

    out = safe_params(
        {"s": Settings("u", "key-1"), "o": Opaque(), "c": SecretStr("x"), "n": 1.5, "nan": float("nan"), "l": [1]}
    )
    assert out["s"] == REDACTED and out["c"] == REDACTED
    assert out["o"].startswith("<") and out["o"].endswith(".Opaque>") and "repr-leak" not in out["o"]
    assert out["n"] == 1.5 and out["nan"] == "nan" and out["l"] == [1]
    json.dumps(out)  # JSON, whatever came in


def test_reveal_secrets_makes_secret_objects_hashable_and_distinct() -> None:
    from pydantic import BaseModel, SecretStr

    from isthmus.hashing import hash_value

    class Db(BaseModel):
        password: SecretStr

    a, b = reveal_secrets(Db(password=SecretStr("a"))), reveal_secrets(Db(password=SecretStr("b")))
    assert hash_value(a) != hash_value(b)
    assert hash_value(reveal_secrets(SecretStr("a"))) == hash_value(reveal_secrets(SecretStr("a")))


def test_values_are_scanned_whole_however_large_or_deep() -> None:
    """No scan budget: a secret after 20,000 other nodes, at the end of a long string list, 100,000 levels
    deep or behind a cycle is found; shared parts and cycles are visited once."""
    canary = "cnry-deep-7f3a9e"
    late = {"pad": list(range(20_000)), "names": [f"x{i}" for i in range(20_000)], "inner": {"password": canary}}
    assert find_secret(late, by_key=True) == ("['inner']['password']", "a secret-named key")
    assert canary in secret_values({"cfg": late}, {})
    assert find_secret({"echo": late["inner"]}, [canary]) == ("['echo']['password']", "the value of a secret")
    strings = [f"row {i}" for i in range(50_000)] + [f"row with {canary}"]
    assert find_secret(strings, [canary]) == ("[50000]", "the value of a secret")
    deep: list = [canary]
    for _ in range(100_000):
        deep = [deep]
    assert find_secret(deep, [canary]) == ("[0]" * 100_000 + "[0]", "the value of a secret")
    loop: dict = {"self": None, "password": canary}
    loop["self"] = loop
    shared = [loop] * 1000
    assert find_secret(shared, by_key=True) == ("[0]['password']", "a secret-named key")
    assert secret_values({"x": shared}, {}) == {canary}


def test_plain_objects_are_scanned_by_what_they_hold() -> None:
    """A project object's attributes are walked at any depth; their names are no secret scope (``.key``
    of a model object is data), but a known secret they hold is found by value."""
    from pydantic import SecretStr

    class Client:
        def __init__(self, value: object) -> None:
            self.value = value
            self.key = "resnet50"
            self.module = re  # code, not data: not entered

    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    canary = "cnry-object-51c0ffee"
    assert find_secret(Wrapper(Client(canary))) is None
    assert find_secret(Wrapper(Client(canary)), [canary]) == (".inner.value", "the value of a secret")
    assert find_secret(Wrapper([Client(SecretStr(canary))])) == (".inner[0].value", "a pydantic.types.SecretStr")
    assert known_secrets_in(Wrapper(Client(f"Token {canary}")), [canary, "other-secret-9"]) == {canary}
    assert "resnet50" not in secret_values({"c": Client("x")}, {})


def test_a_value_secret_as_a_whole_gives_all_its_text() -> None:
    from pydantic import SecretStr

    assert secrets_in("pipe-secret-1") == {"pipe-secret-1"}
    assert secrets_in({"user": "alice", "pw": ["first-secret", SecretStr("second-secret")]}) == {
        "alice",
        "first-secret",
        "second-secret",
    }
    assert secrets_in(3) == set() and secrets_in("abc") == set()  # too short to scrub by value
    # a secret-named parameter holding a list: every text in it is a secret
    assert secret_values({"passwords": ["first-pw-1", "second-pw-2"]}, {}) == {"first-pw-1", "second-pw-2"}


CREDENTIAL_SHAPED = [
    "ghp_ENVCANARY0123456789abcdefABCDEF0123",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
    "glpat-ENVCANARYabcdef123456",
    "xoxb-1234567890-ENVCANARY-abcdefghij",
    "sk-proj-ENVCANARYabcdefghijklmnop0123456789",
    "sk-ENVCANARYabcdefghijklmnop0123456789ABCD",
    "AKIAENVCANARY1234567",
    "AIzaSyENVCANARY0123456789abcdefghijklmnop",
    "hf_ENVCANARYabcdefghijklmnop0123456789",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJFTlZDQU5BUlkifQ.c2lnbmF0dXJlX2J5dGVzX2hlcmU",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    "Zq8vENVCANARYk3LmP9xR2tY7wQ4nB6cH1jD5fG0sA",
]
ORDINARY_VALUES = [
    "0,1",
    "en_US.UTF-8",
    "/opt/conda/envs/Py311ProjectEnv2024Release/bin",
    "4a6cf7d0b5e55ed0123456789abcdef012345678",  # a git sha
    "6f1c9a52-3b0e-4f7d-9a43-2a6c1d8e5b71",  # a uuid
    "node[01-04]",
    "ASIAPACIFICREGIONSERVERS",
    "task-runner-for-the-nightly-feature-build",
    "MyVeryLongClassNameForTestingPurposes2024",
    "europe-west4-docker.pkg.dev/project/repo/image:2024-11-30",
]


@pytest.mark.parametrize("value", CREDENTIAL_SHAPED)
def test_credential_shaped_values(value: str) -> None:
    assert looks_like_credential(value)
    assert is_secret_env("SOME_INNOCENT_NAME", value)


@pytest.mark.parametrize("value", ORDINARY_VALUES)
def test_ordinary_values_are_not_credentials(value: str) -> None:
    assert not looks_like_credential(value)
    assert not is_secret_env("SOME_INNOCENT_NAME", value)
    assert redact_text(value) == value


def test_free_text_loses_tokens_of_a_known_form() -> None:
    text = "push failed for ghp_ENVCANARY0123456789abcdefABCDEF0123 (key AKIAENVCANARY1234567, task-runner ok)"
    assert redact_text(text) == "push failed for *** (key ***, task-runner ok)"
    assert "ENVCANARY" not in scrub(text, [])
    assert "ghp_ENVCANARY0123456789abcdefABCDEF0123" in secret_values({"log": text}, {})


def test_environment_secrets_by_shape_and_not_file_paths(tmp_path) -> None:
    """A credential-shaped value under any name is a secret of the environment; the value of a
    credential-named variable that points at a file (``SSL_CERT_FILE``, ``*_PASSWORD_FILE``) is not: the
    path is no secret, and scrubbing it would blank paths in every traceback."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----")
    env = {
        "GH": "ghp_ENVCANARY0123456789abcdefABCDEF0123",
        "OPAQUE": "Zq8vENVCANARYk3LmP9xR2tY7wQ4nB6cH1jD5fG0sA",
        "NOTE": "push with glpat-ENVCANARYabcdef123456 today",
        "SSL_CERT_FILE": str(bundle),
        "DB_PASSWORD_FILE": str(bundle),
        "API_TOKEN": "tok-123456",
        "HOME": "/home/someone",
    }
    assert secret_values({}, env) == {
        "ghp_ENVCANARY0123456789abcdefABCDEF0123",
        "Zq8vENVCANARYk3LmP9xR2tY7wQ4nB6cH1jD5fG0sA",
        "glpat-ENVCANARYabcdef123456",
        "tok-123456",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db user=etl password=pg-Pw-42 dbname=prod", "host=db user=etl password=*** dbname=prod"),
        ("Driver={ODBC};Server=x;Uid=u;Pwd=odbc-Pw-99;", "Driver={ODBC};Server=x;Uid=u;Pwd=***;"),
        ("AccountName=a;AccountKey=AzKey123==;EndpointSuffix=core", "AccountName=a;AccountKey=***;EndpointSuffix=core"),
        ('{"token": "tok-abc-123", "max_tokens": 4096}', '{"token": "***", "max_tokens": 4096}'),
        ("reason: old password='Au dit-99x', token: AuditTok92", "reason: old password='***', token: ***"),
        # names that merely contain a secret word, and values too short to be a credential, stay
        ("sort_key=created_at max_tokens=1024 primary_key=id_col bypass=yes pwd=abc", None),
        ('{"eos_token": "</s>", "pad_token": "<pad>"} PWD=/home/alice/proj', None),
        ("tokenizer.pad_token = tokenizer.eos_token; {'secret': False, 'token': None}", None),
    ],
)
def test_a_credential_assigned_to_a_password_token_or_key_name_is_hidden(text: str, expected: str | None) -> None:
    assert redact_text(text) == (text if expected is None else expected)
    secrets = shown_secrets(text)
    assert all(s not in redact_text(text) for s in secrets)
    assert bool(secrets) == (expected is not None)


def test_a_url_with_a_password_as_a_mapping_key_is_recorded_hidden() -> None:
    params = {"weights": {"https://mirror:mirror-Pw-43@pypi.example/simple": 1, "plain": 2}}
    got = redact_params(params)["weights"]
    assert set(got) == {"https://mirror:***@pypi.example/simple", "plain"} and got["plain"] == 2


def test_scrub_catches_bytes_ascii_quoted_base64_and_twice_escaped_spellings() -> None:
    import base64

    umlaut = "R3b-Pässwört-11"
    assert scrub(f"{umlaut.encode()!r} {ascii(umlaut)}", [umlaut]) == "b'***' '***'"
    slashed = "R3c/Ab+Cd=Ef/Gh"
    assert scrub(quote(slashed), [slashed]) == REDACTED
    short = "R3dpw7x"
    header = base64.b64encode(b"u:" + short.encode()).decode()  # a Basic header's token
    assert scrub(header, [short]) == header[:4] + REDACTED  # the 'u:' and one byte of it stay, no more
    quoted = "R3e'pa\\ss"
    for exc in (KeyError(f"bad {quoted!r}"), ValueError(f"bad {quoted!r}"), KeyError(quoted)):
        assert "R3e" not in scrub(str(exc), [quoted]), str(exc)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ('postgresql+psycopg://etl:pa ss"w-77@db:5432/x', "postgresql+psycopg://etl:***@db:5432/x"),
        ("postgresql://u:p%40ss-w0rd@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////tmp/isthmus.db", "sqlite:////tmp/isthmus.db"),
        # a slash missing: no authority to parse, the credentials are hidden all the same
        ("postgresql+psycopg:/bob:hunter2secretpw@db:5432/x", "postgresql+psycopg:***@db:5432/x"),
        ("postgresql+psycopg//bob:hunter2:pw@db/x", "postgresql+psycopg//bob:***@db/x"),
        ("bob:hunter2secretpw@db", "bob:***@db"),
    ],
)
def test_a_store_url_shows_no_password_however_it_is_spelled(url: str, shown: str) -> None:
    from isthmus.redaction import redact_location

    assert redact_location(url) == shown
