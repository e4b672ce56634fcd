"""A real PostgreSQL server for tests.

``start_server()`` returns ``(server, None)`` or ``(None, reason)``, in this order of preference:

1. ``ISTHMUS_TEST_PG_URL`` is set: that server is used as is (it is never stopped).
2. PostgreSQL server binaries are installed (Debian: ``apt-get install postgresql``; or
   ``ISTHMUS_TEST_PG_BINDIR`` points at a directory with ``initdb`` and ``pg_ctl``): a throwaway
   cluster is created in a temp directory and started on a free 127.0.0.1 port. PostgreSQL refuses to
   run as root, so as root the cluster belongs to the ``postgres`` system user. ``server.stop()``
   (also registered with ``atexit``) stops that cluster and deletes its directory.
3. Otherwise: ``(None, reason)``.

Run ``python tests/postgres_server.py`` to get a throwaway server for manual use (Ctrl-C or SIGTERM stops it).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

ENV_URL = "ISTHMUS_TEST_PG_URL"
ENV_BINDIR = "ISTHMUS_TEST_PG_BINDIR"
SERVER_USER = "postgres"  # system user that owns the cluster when we run as root
SUPERUSER = "postgres"  # database superuser created by initdb
SESSION_DB = "isthmus_test"
START_TIMEOUT = 30
_SCHEMA_OPTION = "-csearch_path="

_SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # A throwaway cluster: durability buys nothing, speed does.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server and one database in it for the test session."""

    url: str  # SQLAlchemy URL of the session database
    owned: bool  # True when this module started the server (and so stops it)
    base_dir: str | None = None
    bindir: str | None = None
    run_as: str | None = None
    _admin: Any = field(default=None, repr=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = False

    # -- databases -------------------------------------------------------------------------------
    def admin_engine(self) -> Any:
        """An AUTOCOMMIT engine on the session database, for CREATE/DROP DATABASE."""
        if self._admin is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self._admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        return self._admin

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL.

        Without the CREATEDB privilege (an external server), a fresh schema in the session database is
        used instead, selected through ``search_path``.
        """
        from sqlalchemy import text
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import DBAPIError

        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        base = make_url(self.url)
        with self.admin_engine().connect() as conn:
            for attempt in range(5):
                try:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                    return base.set(database=name).render_as_string(hide_password=False)
                except DBAPIError as exc:
                    msg = str(exc.orig).lower()
                    if "permission denied" in msg:
                        break
                    if "being accessed by other users" in msg and attempt < 4:
                        time.sleep(0.2 * (attempt + 1))
                        continue
                    raise
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        query = dict(base.query)
        query["options"] = f"{_SCHEMA_OPTION}{name}"
        return base.set(query=query).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop a database (or schema) made by ``create_database``; errors are ignored."""
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        options = str(parsed.query.get("options") or "")
        schema = options.removeprefix(_SCHEMA_OPTION) if options.startswith(_SCHEMA_OPTION) else None
        with contextlib.suppress(Exception), self.admin_engine().connect() as conn:
            if schema:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                return
            try:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            except Exception:  # PostgreSQL < 13: no FORCE
                terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
                conn.execute(text(terminate), {"d": parsed.database})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the server if this module started it, and delete its directory. Idempotent."""
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None
        if self._stopped or not self.owned:
            return
        self._stopped = True
        assert self.base_dir and self.bindir
        data = os.path.join(self.base_dir, "data")
        for mode in ("fast", "immediate"):
            proc = _run_pg(
                [f"{self.bindir}/pg_ctl", "-D", data, "-m", mode, "-w", "-t", "20", "stop"], self.run_as, self.base_dir
            )
            if proc.returncode == 0 or not os.path.exists(os.path.join(data, "postmaster.pid")):
                break
        else:
            _kill_postmaster(data)
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()


# -- helpers -------------------------------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env.pop("LANG", None)
    return env


def _as_user(cmd: list[str], run_as: str | None) -> list[str]:
    if not run_as:
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", run_as, "--", *cmd]
    return ["su", run_as, "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _run_pg(cmd: list[str], run_as: str | None, cwd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_user(cmd, run_as), cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _start_watchdog(bindir: str, base: str, run_as: str | None) -> subprocess.Popen[bytes]:
    """A tiny process that stops the cluster and deletes its directory if this process dies without doing so
    (SIGKILL, a CI job cancelled): no server outlives the tests that started it."""
    stop = shlex.join(_as_user([f"{bindir}/pg_ctl", "-D", f"{base}/data", "-m", "immediate", "-w", "stop"], run_as))
    script = (
        f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; "
        f"if [ -f {shlex.quote(base)}/data/postmaster.pid ]; then {stop} >/dev/null 2>&1; fi; rm -rf {shlex.quote(base)}"
    )
    return subprocess.Popen(
        ["/bin/sh", "-c", script],
        cwd="/",
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill_postmaster(data: str) -> None:
    with contextlib.suppress(Exception):
        with open(os.path.join(data, "postmaster.pid")) as fh:
            pid = int(fh.readline().strip())
        os.kill(pid, 9)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path)) or (0,)


def find_bindir() -> str | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first."""
    candidates: list[str] = []
    if os.environ.get(ENV_BINDIR):
        candidates.append(os.environ[ENV_BINDIR])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), key=_version_key, reverse=True)
    which = shutil.which("pg_ctl")
    if which:
        candidates.append(os.path.dirname(os.path.realpath(which)))
    for c in candidates:
        if all(os.access(os.path.join(c, exe), os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return c
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable_by_others(path: str) -> bool:
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _temp_parent(run_as: str | None) -> str:
    tmp = tempfile.gettempdir()
    if run_as and not _traversable_by_others(tmp):
        return "/tmp"
    return tmp


def _log_tail(base: str, lines: int = 15) -> str:
    with contextlib.suppress(OSError), open(os.path.join(base, "server.log"), errors="replace") as fh:
        return "".join(fh.readlines()[-lines:]).strip()
    return ""


def _check_url(url: str) -> str | None:
    """None when ``url`` accepts connections, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure is a reason to report
        return f"cannot connect to {_redact(url)}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


# -- entry point ---------------------------------------------------------------------------------
def start_server() -> tuple[PostgresServer | None, str | None]:
    """A PostgreSQL server for tests, or None and the reason there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (install the 'postgres' extra: isthmus[postgres])"

    external = os.environ.get(ENV_URL, "").strip()
    if external:
        if external.startswith("postgresql://") or external.startswith("postgres://"):
            external = "postgresql+psycopg://" + external.split("://", 1)[1]
        problem = _check_url(external)
        if problem:
            return None, f"{ENV_URL} is set but {problem}"
        return PostgresServer(url=external, owned=False), None

    bindir = find_bindir()
    if bindir is None:
        return None, (
            f"no PostgreSQL server: set {ENV_URL}, or install the server binaries (initdb, pg_ctl; "
            "Debian: apt-get install postgresql)"
        )
    run_as = None
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam(SERVER_USER)
        except KeyError:
            return None, f"running as root and there is no '{SERVER_USER}' user to own a PostgreSQL cluster"
        run_as = SERVER_USER

    base = tempfile.mkdtemp(prefix="isthmus-pg-", dir=_temp_parent(run_as))
    started = False
    server: PostgresServer | None = None
    try:
        if run_as:
            os.chown(base, pw.pw_uid, pw.pw_gid)
        data = os.path.join(base, "data")
        initdb = [
            f"{bindir}/initdb",
            "-D",
            data,
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        init = _run_pg(initdb, run_as, base)
        if init.returncode != 0:
            return None, f"initdb failed ({init.returncode}): {(init.stderr or init.stdout).strip()[-800:]}"
        reason = "pg_ctl start failed"
        for _ in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            settings = {**_SERVER_SETTINGS, "port": str(port), "unix_socket_directories": f"'{base}'"}
            with open(os.path.join(data, "postgresql.auto.conf"), "a") as fh:
                fh.writelines(f"{k} = {v}\n" for k, v in settings.items())
            start = [
                f"{bindir}/pg_ctl",
                "-D",
                data,
                "-l",
                f"{base}/server.log",
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ]
            proc = _run_pg(start, run_as, base, timeout=START_TIMEOUT + 15)
            if proc.returncode == 0:
                started = True
                break
            log = _log_tail(base)
            reason = f"pg_ctl start failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}\n{log}"
            _run_pg([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], run_as, base)
            if "in use" not in log:
                break
        if not started:
            return None, reason

        root_url = f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}"
        server = PostgresServer(url=f"{root_url}/postgres", owned=True, base_dir=base, bindir=bindir, run_as=run_as)
        server._watchdog = _start_watchdog(bindir, base, run_as)
        atexit.register(server.stop)
        try:
            from sqlalchemy import text

            with server.admin_engine().connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{SESSION_DB}"'))
        except Exception as exc:
            server.stop()
            return None, f"PostgreSQL started but CREATE DATABASE failed: {exc}"
        server._admin.dispose()
        server._admin = None
        server.url = f"{root_url}/{SESSION_DB}"
        return server, None
    except Exception as exc:  # noqa: BLE001 - reported as the reason, the caller decides
        if server is not None:
            server.stop()
        elif started:
            _run_pg([f"{bindir}/pg_ctl", "-D", f"{base}/data", "-m", "immediate", "-w", "stop"], run_as, base)
            shutil.rmtree(base, ignore_errors=True)
        return None, f"could not start a throwaway PostgreSQL ({type(exc).__name__}: {exc})"
    finally:
        if not started:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on kill as on Ctrl-C
    t0 = time.monotonic()
    srv, why = start_server()
    if srv is None:
        raise SystemExit(f"no PostgreSQL: {why}")
    print(f"{srv.url}  (ready in {time.monotonic() - t0:.2f}s; Ctrl-C or SIGTERM stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
