"""Steps for the Airflow tests, in a module of their own so that Airflow (any process, a live deployment)
and a local run import them by the same path and compute the same cache keys."""

from __future__ import annotations

from isthmus import pipeline, step


@step
def names() -> list:
    return ["ada", "grace", "edsger"]


@step
def shout(name: str) -> str:
    return name.upper() + "!"


@step
def join(words: list) -> str:
    return " ".join(words)


@step
def count(items: list) -> int:
    return len(items)


@step
def settings() -> dict:
    return {"uri": "not a list", "size": 3}


@step
def line_count(text: str) -> int:
    return text.count("\n")


@step
def square(x: int) -> int:
    return x * x


@step
def broken(x: int) -> int:
    raise ValueError(f"bad value {x} in column y")


@step
def call_api(endpoint: str, api_token: str) -> int:
    raise PermissionError(f"{endpoint} refused the request made with token {api_token}")


@step
def login_with(host: str, value: str) -> int:  # an innocent parameter name
    raise PermissionError(f"login to {host} refused for {value}")


@step
def value_length(host: str, value: str) -> int:
    return len(host) + len(value)


@pipeline
def secret_etl(host: str = "db1", password: str = "unset"):
    return value_length(host, password)  # positional: the step never sees the name 'password'
