"""The ``rest`` backend: slurmrestd over a unix socket or HTTP(S), with JWT headers.

The API version is chosen from what the server offers: ``v0.0.38`` (Slurm 22.05: plain values, an
environment object, ``job_state`` a string) or the data_parser API of ``v0.0.39`` and later (Slurm
23.02+, including ``v0.0.40``+ of 23.11+: ``{"set", "number"}`` values, ``["NAME=value"]``
environment, ``job_state`` a list of flags, ``exit_code`` an object).
"""

from __future__ import annotations

import asyncio
import getpass
import re
from typing import Any

from isthmus.slurm.backends.base import ConnectionFields, LocalFilesMixin, SlurmClient, submit_hint
from isthmus.slurm.errors import SlurmConfigError, SlurmError, SlurmParseError, SlurmSubmitError, SlurmUnavailable
from isthmus.slurm.spec import JobSpec
from isthmus.slurm.states import JobStatus, normalize_state

KNOWN_VERSIONS = ("v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
_VERSION_RE = re.compile(r"/slurm/(v\d+\.\d+\.\d+)/job/submit")
DEFAULT_JOB_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split("."))


def choose_version(paths: Any) -> str | None:
    """The newest job API among the server's OpenAPI paths (None if it offers none)."""
    found = {m.group(1) for p in paths for m in [_VERSION_RE.match(str(p))] if m}
    return max(found, key=_vkey) if found else None


def _number(value: Any) -> Any:
    """A plain value from ``{"set": true, "number": N}`` (data_parser) or N (v0.0.38)."""
    if isinstance(value, dict):
        if value.get("infinite"):
            return "UNLIMITED"
        return value.get("number") if value.get("set", True) else None
    return value


def _exit_code(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):  # data_parser: {"status": [...], "return_code": {...}, "signal": {...}}
        rc = _number(value.get("return_code"))
        sig = _number((value.get("signal") or {}).get("id")) if isinstance(value.get("signal"), dict) else None
        return f"{rc or 0}:{sig or 0}"
    try:
        code = int(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{code >> 8}:{code & 0x7F}" if code > 255 else f"{code}:0"


def status_from_rest(job: dict[str, Any]) -> JobStatus:
    """A :class:`JobStatus` from one entry of ``jobs`` (any API version)."""
    raw = job.get("job_state")
    if raw is None:
        raise SlurmParseError(f"slurmrestd returned a job without job_state: {str(job)[:200]}")
    nodes = job.get("nodes")
    return JobStatus(
        job_id=str(job.get("job_id")),
        state=normalize_state(raw),
        raw_state=raw,
        name=job.get("name") or None,
        reason=None if job.get("state_reason") in (None, "", "None") else job.get("state_reason"),
        exit_code=_exit_code(job.get("exit_code")),
        partition=job.get("partition") or None,
        nodes=(",".join(nodes) if isinstance(nodes, list) else nodes) or None,
        stdout=job.get("standard_output") or None,
        stderr=job.get("standard_error") or None,
        restarts=int(job.get("restart_cnt") or 0),
        time_limit=str(_number(job.get("time_limit"))) if job.get("time_limit") is not None else None,
        tres=job.get("tres_req_str") or job.get("tres_per_node") or None,
        source="rest",
    )


def _errors(data: Any) -> list[str]:
    out = []
    for e in (data or {}).get("errors") or [] if isinstance(data, dict) else []:
        if isinstance(e, dict):
            text = e.get("description") or e.get("error") or ""
            code = e.get("error_number") or e.get("errno")
            if e.get("error") and e.get("description") and e["error"] not in text:
                text = f"{e['error']}: {text}"
            out.append(f"{text}{f' (error {code})' if code else ''}".strip())
        else:
            out.append(str(e))
    return [x for x in out if x]


class RestSlurmClient(LocalFilesMixin, SlurmClient):  # no file API in slurmrestd: a filesystem shared with the nodes
    """slurmrestd at ``url`` (``http(s)://host:port``) or on a unix ``socket``.

    ``token`` (a JWT, e.g. from ``scontrol token``) and ``user`` (default: the current user) become
    the ``X-SLURM-USER-TOKEN``/``X-SLURM-USER-NAME`` headers; a unix socket with ``rest_auth/local``
    needs none. ``version`` pins the API (``"v0.0.38"``), else the newest the server offers is used.
    Job log files are read where this process runs, so logs need the cluster's shared filesystem.
    """

    kind = "rest"
    summary = "slurmrestd"
    takes_token = True

    def __init__(
        self,
        url: str | None = None,
        *,
        socket: str | None = None,
        token: str | None = None,
        user: str | None = None,
        version: str | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        job_env: dict[str, str] | None = None,
    ) -> None:
        if not url and not socket:
            raise SlurmError("the rest backend needs url='http(s)://host:port' or socket='/path/to/slurmrestd.socket'")
        if url and not re.match(r"^https?://", url):
            raise SlurmError(f"slurmrestd url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/") if url else None
        self.socket = socket
        self.token = token
        self.user = user or (getpass.getuser() if token else None)
        self.version = version
        self.timeout = timeout
        self.verify = verify
        self.job_env = dict(DEFAULT_JOB_ENV if job_env is None else job_env)
        self._clients: dict[int, Any] = {}

    @classmethod
    def connection_options(cls, conn: ConnectionFields, where: str) -> dict[str, Any]:
        """``host`` is the slurmrestd URL (``http(s)://host:port``; ``schema`` and ``port`` are added when
        it has none) or ``extra.socket`` a unix socket; ``password`` the JWT (``scontrol token``) and
        ``login`` its user; ``extra.api_version`` pins the API; ``extra.timeout`` (seconds, default 30)."""
        extra = conn.extra
        url = conn.host or None
        if url and "://" not in url:
            url = f"{conn.schema or 'http'}://{url}"
        if url and conn.port and url.count(":") < 2:
            url = f"{url}:{conn.port}"
        if not url and not extra.get("socket"):
            raise SlurmConfigError(f"{where}: the rest backend needs host (slurmrestd URL) or extra.socket")
        return {
            "url": url,
            "socket": extra.get("socket"),
            "token": conn.password or None,
            "user": conn.login or None,
            "version": extra.get("api_version"),
            "timeout": float(extra.get("timeout") or 30),
        }

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "url": self.url or f"unix:{self.socket}", "version": self.version}

    def serialize(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "socket": self.socket,
            "token": self.token,
            "user": self.user,
            "version": self.version,
            "timeout": self.timeout,
            "verify": self.verify,
            "job_env": self.job_env,
        }

    # -- HTTP ------------------------------------------------------------------------------------
    def _http(self) -> Any:
        import httpx

        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            headers = {"Accept": "application/json"}
            if self.token:
                headers["X-SLURM-USER-TOKEN"] = self.token
                headers["X-SLURM-USER-NAME"] = self.user or getpass.getuser()
            if self.socket:
                transport = httpx.AsyncHTTPTransport(uds=self.socket)
                client = httpx.AsyncClient(
                    transport=transport, base_url="http://slurmrestd", headers=headers, timeout=self.timeout
                )
            else:
                assert self.url is not None  # __init__ refuses neither url nor socket
                client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout, verify=self.verify)
            self._clients[loop_id] = client
        return client

    def _token_hint(self) -> str:
        if not self.token:
            return ""
        return (
            "; with a JWT, check that the token is valid and unexpired ('scontrol token') and belongs to the user name"
        )

    @property
    def where(self) -> str:
        return self.url or f"unix:{self.socket}"

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        import httpx

        try:
            resp = await self._http().request(method, path, **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise SlurmUnavailable(
                f"slurmrestd at {self.where} is unreachable ({type(exc).__name__}: {exc}); check that it runs "
                "and the url/socket"
            ) from None
        if resp.status_code in (401, 403):
            raise SlurmError(
                f"slurmrestd at {self.where} refused the credentials (HTTP {resp.status_code}: {resp.text.strip()[:200]}); "
                "check the token (scontrol token) and user name"
            )
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            raise SlurmParseError(
                f"slurmrestd at {self.where} answered {method} {path} with HTTP {resp.status_code} and non-JSON "
                f"{resp.text.strip()[:200]!r}"
            ) from None
        return resp.status_code, data

    async def api_version(self) -> str:
        """The API version to use (found once from the server's OpenAPI paths)."""
        if self.version:
            return self.version
        paths: Any = []
        try:
            code, data = await self._request("GET", "/openapi/v3")
            if code == 200 and isinstance(data, dict):
                paths = list((data.get("paths") or {}).keys())
        except SlurmParseError:
            paths = []
        version = choose_version(paths)
        if version is None:  # no spec: probe, newest first
            for v in KNOWN_VERSIONS:
                code, _ = await self._request("GET", f"/slurm/{v}/ping")
                if code == 200:
                    version = v
                    break
        if version is None:
            raise SlurmError(
                f"slurmrestd at {self.where} offers no job API this client knows ({', '.join(KNOWN_VERSIONS)})"
            )
        self.version = version
        return version

    # -- interface -------------------------------------------------------------------------------
    async def submit(self, spec: JobSpec) -> str:
        v = await self.api_version()
        body = spec.rest_body(v, self.job_env)
        code, data = await self._request("POST", f"/slurm/{v}/job/submit", json=body)
        errors = _errors(data)
        job_id = data.get("job_id") if isinstance(data, dict) else None
        if job_id is None and isinstance(data, dict) and isinstance(data.get("result"), dict):
            job_id = data["result"].get("job_id")
        if errors or code >= 400 or job_id is None:
            if job_id is not None:  # submitted but reported an error: do not leave it behind
                await self.cancel(str(job_id))
            msg = "; ".join(errors) or f"HTTP {code}: {str(data)[:200]}"
            if not errors and code < 400:
                for job in await self._find_quietly(spec.name):
                    await self.cancel(job.job_id)
                raise SlurmParseError(
                    f"slurmrestd accepted job {spec.name!r} but returned no job id ({msg}); any job it made was cancelled"
                )
            hint = submit_hint(msg)
            raise SlurmSubmitError(f"Slurm refused job {spec.name!r} ({spec.to_dict()}): {msg}; {hint}")
        return str(job_id)

    async def status(self, job_id: str) -> JobStatus | None:
        v = await self.api_version()
        code, data = await self._request("GET", f"/slurm/{v}/job/{job_id}")
        errors = _errors(data)
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if jobs:
            if not isinstance(jobs, list) or not isinstance(jobs[0], dict):
                raise SlurmParseError(f"slurmrestd returned jobs={str(jobs)[:200]!r} for job {job_id}")
            return status_from_rest(jobs[0])
        if any("invalid job id" in e.lower() or "not found" in e.lower() for e in errors) or (
            code == 200 and not errors
        ):
            return None
        raise SlurmError(
            f"slurmrestd could not report job {job_id}: {'; '.join(errors) or f'HTTP {code}'}{self._token_hint()}"
        )

    async def cancel(self, job_id: str) -> None:
        v = await self.api_version()
        code, data = await self._request("DELETE", f"/slurm/{v}/job/{job_id}")
        errors = _errors(data)
        if code >= 400 or errors:
            text = "; ".join(errors).lower()
            if "invalid job id" in text or "already completing or completed" in text or "not found" in text:
                return
            raise SlurmError(f"slurmrestd could not cancel job {job_id}: {'; '.join(errors) or f'HTTP {code}'}")

    async def find(self, name: str) -> list[JobStatus]:
        v = await self.api_version()
        code, data = await self._request("GET", f"/slurm/{v}/jobs")
        if code >= 400:
            raise SlurmError(
                f"slurmrestd could not list jobs: {'; '.join(_errors(data)) or f'HTTP {code}'}{self._token_hint()}"
            )
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, list):
            raise SlurmParseError(f"slurmrestd returned {str(data)[:200]!r} for the job list")
        found = [status_from_rest(j) for j in jobs if isinstance(j, dict) and j.get("name") == name]
        return sorted(found, key=lambda s: int(s.job_id), reverse=True)

    async def ping(self) -> dict[str, Any]:
        v = await self.api_version()
        code, data = await self._request("GET", f"/slurm/{v}/ping")
        pings = data.get("pings") if isinstance(data, dict) else None
        if code >= 400 or not pings:
            raise SlurmUnavailable(
                f"slurmrestd at {self.where} cannot reach slurmctld: {'; '.join(_errors(data)) or f'HTTP {code}'}"
                f"{self._token_hint()}"
            )
        up = [p for p in pings if str(p.get("ping") or p.get("pinged") or "").upper() == "UP"]
        if not up:
            raise SlurmUnavailable(f"slurmctld is not answering slurmrestd at {self.where}: {pings}")
        code, parts = await self._request("GET", f"/slurm/{v}/partitions")
        names = (
            sorted(str(p["name"]) for p in (parts.get("partitions") or []) if isinstance(p, dict) and p.get("name"))
            if code == 200
            else []
        )
        meta = (data.get("meta") or {}).get("Slurm") or (data.get("meta") or {}).get("slurm") or {}
        return {"ping": pings, "partitions": names, "version": v, "slurm": meta.get("release")}

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await client.aclose()
            except Exception:  # a client of another (closed) loop
                pass
