"""Throwaway PostgreSQL servers that a pytest session starts and stops itself.

Some behaviour (row locking, SKIP LOCKED, advisory locks, connection loss) only shows up
against a real PostgreSQL, so tests start a private cluster instead of relying on a
shared server. Everything here is synchronous (subprocesses running the cluster's own
binaries) so it works from plain, session- or module-scoped pytest fixtures.

Typical use::

    cluster = PostgresCluster(base_dir=tmp_path_factory.mktemp("pg"))
    cluster.start()
    url = cluster.create_database("app")  # postgresql+asyncpg://postgres@127.0.0.1:PORT/app
    ...
    cluster.close()  # stop the server and remove any private directories

The server is started as a direct child process (``postgres -D ...``, output appended to
a log file whose tail goes into start errors) and stopped with ``pg_ctl stop -m fast``;
see ``_Runner.spawn`` for why not ``pg_ctl start``. Settings live in
``data/test_overrides.conf``, so the cluster can also be started by hand for debugging.

Data, socket and log live in a private ``chat-bridge-pg-*`` directory (on tmpfs
``/dev/shm`` when it has room, else the temp dir) and ``base_dir/pg`` symlinks to it:
tmpfs makes database creation much faster, and when we are root the server user
could not enter pytest's 0700 temp dirs anyway. ``close()`` (or, failing that, an
interpreter-exit finalizer, or the next session's stale-cluster sweep) removes it.

PostgreSQL refuses to run as root. When we are root the server binaries (initdb,
postgres, pg_ctl) run as the ``postgres`` system user via ``subprocess``'s
``user``/``group``/``extra_groups`` arguments (no su/runuser, no shell quoting), and the
private directory is chowned to that user. Client tools (psql, pg_isready) stay root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.apt import AptFailed, install_lock, run_apt

__all__ = [
    "PostgresCluster",
    "PostgresClusterError",
    "PostgresUnavailable",
    "ensure_postgres_installed",
    "find_pg_bin",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"

_DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
_REQUIRED_TOOLS = ("initdb", "pg_ctl")
_PRIVATE_PREFIX = "chat-bridge-pg-"
_FAST_ROOT = Path("/dev/shm")
_FAST_ROOT_MIN_FREE = 1 << 30
_NAME_RE = re.compile(r"[a-z0-9_]{1,63}")
_PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
# Longest unix socket path the kernel accepts is 107 bytes; ".s.PGSQL.65535" must fit.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")
_LOG_TAIL_LINES = 40
# Settings that trade durability for speed: test data is disposable.
_SPEED_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    # An autovacuum worker inside a freshly filled template database makes
    # CREATE DATABASE ... TEMPLATE wait (in 100 ms steps) for it to exit; tests don't
    # need background vacuuming of throwaway data.
    "autovacuum": "off",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries and no way to install them; callers should skip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PostgresClusterError(RuntimeError):
    """The binaries exist but the cluster misbehaved (start, stop or an admin command)."""


# ---------------------------------------------------------------------------------------
# Locating / installing binaries
# ---------------------------------------------------------------------------------------


def _has_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in _REQUIRED_TOOLS)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.name.split("."))


def find_pg_bin() -> Path | None:
    """Directory holding ``initdb`` and ``pg_ctl``: newest Debian install first, else PATH.

    Debian keeps server binaries out of PATH (``/usr/lib/postgresql/<ver>/bin``), so look
    there first; PATH entries are resolved through symlinks so sibling tools are found.
    """
    if _DEBIAN_PG_ROOT.is_dir():
        versions = [d for d in _DEBIAN_PG_ROOT.iterdir() if re.fullmatch(r"\d+(\.\d+)?", d.name)]
        for version_dir in sorted(versions, key=_version_key, reverse=True):
            if _has_tools(version_dir / "bin"):
                return version_dir / "bin"
    initdb = shutil.which("initdb")
    if initdb is not None:
        for candidate in (Path(initdb).resolve().parent, Path(initdb).parent):
            if _has_tools(candidate):
                return candidate
    return None


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_apt(args: Sequence[str]) -> None:
    try:
        run_apt(args)
    except AptFailed as error:
        raise PostgresUnavailable(str(error)) from error


def ensure_postgres_installed() -> Path:
    """Return the server bin dir, apt-installing ``postgresql`` first if root and missing.

    Fresh CI machines often have no PostgreSQL; installing from the distro mirror keeps
    the real-database tests running there instead of silently skipping.
    """
    found = find_pg_bin()
    if found is not None:
        return found
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under "
            f"{_DEBIAN_PG_ROOT}/*/bin or on PATH, and they cannot be installed "
            "automatically (needs root and apt-get); install the 'postgresql' package"
        )
    with install_lock():
        found = find_pg_bin()  # another worker may have installed it while we waited
        if found is None:
            _run_apt([apt_get, "-q", "update"])
            _run_apt(
                [
                    apt_get,
                    "-q",
                    "-o",
                    "DPkg::Lock::Timeout=300",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "postgresql",
                ]
            )
            found = find_pg_bin()
    if found is None:
        raise PostgresUnavailable(
            "apt-get installed 'postgresql' but initdb/pg_ctl are still not found"
        )
    return found


# ---------------------------------------------------------------------------------------
# Running the binaries
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Identity:
    """Who a child process runs as: None everywhere is ourselves."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None


def _clean_env() -> dict[str, str]:
    """Environment without PG* variables, which would silently redirect the tools."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"  # stable, English server messages (we grep the log)
    return env


@dataclass(frozen=True)
class _Runner:
    """Runs cluster binaries, as the ``postgres`` user when we are root.

    Kept separate from ``PostgresCluster`` so the exit-time finalizer can use it without
    holding a reference to the cluster.
    """

    bin_dir: Path
    run_as: pwd.struct_passwd | None

    def tool(self, name: str) -> str:
        local = self.bin_dir / name
        if os.access(local, os.X_OK):
            return str(local)
        found = shutil.which(name)
        if found is None:
            raise PostgresClusterError(f"{name} not found in {self.bin_dir} or on PATH")
        return found

    def _process_identity(self, *, as_server_user: bool) -> tuple[dict[str, str], _Identity]:
        """The environment and the user a child runs with: the server user's when there is
        one (and ``as_server_user``), else our own."""
        env = _clean_env()
        if not as_server_user or self.run_as is None:
            return env, _Identity()
        env.update(HOME=self.run_as.pw_dir, USER=self.run_as.pw_name, LOGNAME=self.run_as.pw_name)
        return env, _Identity(self.run_as.pw_uid, self.run_as.pw_gid, [])

    def run(
        self,
        args: Sequence[str],
        *,
        as_server_user: bool = True,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        env, user = self._process_identity(as_server_user=as_server_user)
        try:
            return subprocess.run(
                list(args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=env,
                # The server user must be able to stat its cwd (root's home is 0700).
                cwd=cwd,
                user=user.uid,
                group=user.gid,
                extra_groups=user.extra_groups,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresClusterError(f"`{' '.join(args)}` timed out after {timeout}s") from exc

    def spawn(self, args: Sequence[str], *, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running server process as our own child, output appended to ``log``.

        Our own child rather than ``pg_ctl start``: pg_ctl orphans the server to PID 1,
        and in containers whose PID 1 does not reap (like this sandbox) every stopped
        server would linger as a ``<defunct>`` zombie. We wait() for it in stop().
        """
        env, user = self._process_identity(as_server_user=True)
        with log.open("ab") as log_handle:
            return subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user.uid,
                group=user.gid,
                extra_groups=user.extra_groups,
                # Like pg_ctl: a Ctrl-C aimed at pytest must not kill the server mid-teardown.
                start_new_session=True,
            )

    def pg_ctl(
        self, data_dir: Path, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            [self.tool("pg_ctl"), "-D", str(data_dir), *args],
            cwd=data_dir.parent,
            timeout=timeout,
        )

    def is_running(self, data_dir: Path) -> bool:
        if not (data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status: 0 running, 3 not running (stale postmaster.pid included), 4 no dir
        return self.pg_ctl(data_dir, "status", timeout=30).returncode == 0


def _reap(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """wait() for our server children so they do not linger as zombies."""
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


def _shutdown(
    runner: _Runner,
    data_dir: Path,
    procs: list[subprocess.Popen[bytes]],
    private_dirs: tuple[Path, ...],
    links: tuple[Path, ...],
) -> None:
    """Best-effort stop + removal of private dirs; used by close() and at interpreter exit."""
    with contextlib.suppress(Exception):
        if runner.is_running(data_dir):
            runner.pg_ctl(data_dir, "stop", "-m", "immediate", "-w", "-t", "30", timeout=60)
    with contextlib.suppress(Exception):
        _reap(procs, timeout=10)
    for directory in private_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    for link in links:
        with contextlib.suppress(OSError):
            link.unlink()


def _work_roots() -> list[Path]:
    roots = [Path(tempfile.gettempdir())]
    if _FAST_ROOT.is_dir() and os.access(_FAST_ROOT, os.W_OK | os.X_OK):
        roots.insert(0, _FAST_ROOT)
    return roots


def _work_root() -> Path:
    """Where private clusters live: tmpfs ``/dev/shm`` if roomy, else the temp dir.

    Every CREATE DATABASE creates ~300 files; on tmpfs that is ~50x faster than on the
    disk-backed /tmp of our CI VMs. Docker's default 64 MB /dev/shm is too small, hence
    the free-space check.
    """
    for root in _work_roots():
        try:
            if root != _FAST_ROOT or shutil.disk_usage(root).free >= _FAST_ROOT_MIN_FREE:
                return root
        except OSError:
            continue
    return Path(tempfile.gettempdir())


def _owner_tag() -> str:
    return f"{socket.gethostname()} {os.getpid()}\n"


def _owner_is_gone(tag: str) -> bool:
    host, _, pid_text = tag.strip().rpartition(" ")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine/container sharing the dir, or not ours: leave it
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _reap_stale_clusters(runner: _Runner) -> None:
    """Stop and delete private clusters left by pytest sessions that were killed.

    A SIGKILLed session never runs its finalizers, so its server keeps running and its
    work dir stays behind; the owner file (host + pid) tells such leftovers from live ones.
    """
    for root in _work_roots():
        for work_dir in root.glob(f"{_PRIVATE_PREFIX}*"):
            try:
                tag = (work_dir / "owner").read_text()
            except OSError:
                continue
            if _owner_is_gone(tag):
                _shutdown(runner, work_dir / "data", [], (work_dir,), ())


def _free_port() -> int:
    """A port the kernel just handed out; tiny race with other processes, so we retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(name: str) -> str:
    """Only ``[a-z0-9_]{1,63}`` is accepted, so quoting cannot be escaped or folded."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ValueError(f"invalid database name {name!r}: use 1-63 characters of [a-z0-9_]")
    return f'"{name}"'


# ---------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------


class PostgresCluster:
    """A private PostgreSQL server on 127.0.0.1 and a free port, for one test session.

    ``start()`` runs initdb on first use; ``stop()``/``start()``/``restart()`` keep the data
    and the port (needed for outage tests); ``close()`` stops it and removes private dirs.
    Also usable as a context manager.
    """

    def __init__(self, *, base_dir: Path, bin_dir: Path | None = None) -> None:
        self._base_dir = Path(base_dir)
        self._bin_dir = bin_dir
        self._run_as: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam(SUPERUSER)
            except KeyError:
                self._run_as = None  # reported by start(), which is where callers expect it
        self._runner: _Runner | None = None
        self._work_dir: Path | None = None
        self._socket_dir: Path | None = None
        self._port: int | None = None
        # Server processes we spawned and must wait() for; shared with the finalizer.
        self._procs: list[subprocess.Popen[bytes]] = []
        self._server_version_num = 0
        self._finalizer: weakref.finalize[..., PostgresCluster] | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresClusterError("cluster has not been started")
        return self._port

    @property
    def admin_dsn(self) -> str:
        """libpq/asyncpg DSN of the maintenance database, as the trusted superuser."""
        return self.dsn("postgres")

    @property
    def data_dir(self) -> Path:
        return self._require_work_dir() / "data"

    @property
    def log_path(self) -> Path:
        """Server stdout/stderr log; its tail is included in start/stop failures."""
        return self._require_work_dir() / "postgres.log"

    @property
    def server_version_num(self) -> int:
        return self._server_version_num

    @property
    def is_running(self) -> bool:
        return self._runner is not None and self._runner.is_running(self.data_dir)

    def dsn(self, name: str) -> str:
        """Plain ``postgresql://`` DSN (asyncpg, psql) for database ``name``."""
        _quote_ident(name)
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def url(self, name: str) -> str:
        """SQLAlchemy async URL for database ``name``."""
        _quote_ident(name)
        return f"postgresql+asyncpg://{SUPERUSER}@{HOST}:{self.port}/{name}"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """initdb (first time only), then start and wait until it accepts connections.

        The first start picks a free port (retrying if another process grabs it); later
        starts reuse that port so clients can reconnect after ``restart()``.
        """
        runner = self._ensure_runner()
        if self._work_dir is None:
            _reap_stale_clusters(runner)
            self._prepare_dirs(runner)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(runner)
        elif runner.is_running(self.data_dir):
            return
        fixed_port = self._port
        attempts = 1 if fixed_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = fixed_port if fixed_port is not None else _free_port()
            self._write_settings(port)
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = runner.spawn(
                [runner.tool("postgres"), "-D", str(self.data_dir)],
                cwd=self._require_work_dir(),
                log=self.log_path,
            )
            self._procs.append(proc)
            self._chown(self.log_path)
            failure = self._wait_ready(runner, proc, port)
            if failure is None:
                self._port = port
                return
            self._port = fixed_port
            self._kill_failed_start(runner)
            new_log = self._read_log(log_offset)
            if attempt < attempts and "could not bind" in new_log:
                continue  # lost the race for the port; pick another
            raise PostgresClusterError(
                f"PostgreSQL in {self.data_dir} failed to start on {HOST}:{port}: {failure}\n"
                f"--- server log tail ({self.log_path}) ---\n{_tail(new_log)}"
            )

    def stop(self) -> None:
        """Fast shutdown; a no-op if never started or already stopped."""
        if self._runner is None or self._work_dir is None:
            return
        runner, data_dir = self._runner, self.data_dir
        if runner.is_running(data_dir):
            result = runner.pg_ctl(data_dir, "stop", "-m", "fast", "-w", "-t", "60")
            if result.returncode != 0 and runner.is_running(data_dir):
                # Fast shutdown can still stall (e.g. a stuck backend); don't hang teardown.
                forced = runner.pg_ctl(data_dir, "stop", "-m", "immediate", "-w", "-t", "30")
                if forced.returncode != 0 and runner.is_running(data_dir):
                    raise PostgresClusterError(
                        f"could not stop PostgreSQL in {data_dir}:\n"
                        f"{result.stdout}{result.stderr}{forced.stdout}{forced.stderr}\n"
                        f"--- server log tail ---\n{_tail(self._read_log(0))}"
                    )
        _reap(self._procs)

    def restart(self) -> None:
        """Stop and start again on the same port, e.g. to simulate a database outage."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete private temp dirs; safe to call more than once."""
        self.stop()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- admin --------------------------------------------------------------------------

    def execute(self, sql: str, *, dbname: str = "postgres") -> str:
        """Run SQL through the cluster's ``psql`` (sync, so usable from any fixture).

        Returns unaligned, tuples-only output. Each call is its own connection, which is
        closed when this returns.
        """
        runner = self._ensure_runner()
        args = [
            runner.tool("psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            dbname,
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]
        result = runner.run(args, as_server_user=False, timeout=120)
        if result.returncode != 0:
            raise PostgresClusterError(
                f"psql failed (exit {result.returncode}) on {dbname!r}: {sql}\n"
                f"{result.stderr.strip()}"
            )
        return result.stdout

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create ``name`` (optionally as a copy of ``template``); return its async URL.

        Copying a template is much faster than re-running migrations, but PostgreSQL
        refuses ``CREATE DATABASE ... TEMPLATE x`` while any other session is connected to
        ``x`` (it waits ~5 s, then fails with "source database is being accessed by other
        users"). Dispose of every engine/pool pointing at the template first.
        """
        statement = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            statement += f" TEMPLATE {_quote_ident(template)}"
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating its connections (PostgreSQL 13+)."""
        ident = _quote_ident(name)
        if name in _PROTECTED_DATABASES:
            raise ValueError(f"refusing to drop the built-in database {name!r}")
        force = " WITH (FORCE)" if self._server_version_num >= 130000 else ""
        self.execute(f"DROP DATABASE IF EXISTS {ident}{force}")

    # -- internals ----------------------------------------------------------------------

    def _require_work_dir(self) -> Path:
        if self._work_dir is None:
            raise PostgresClusterError("cluster has not been started")
        return self._work_dir

    def _ensure_runner(self) -> _Runner:
        if self._runner is None:
            if os.geteuid() == 0 and self._run_as is None:
                raise PostgresUnavailable(
                    f"running as root but there is no {SUPERUSER!r} system user to run "
                    "PostgreSQL as (PostgreSQL refuses to run as root)"
                )
            bin_dir = self._bin_dir if self._bin_dir is not None else ensure_postgres_installed()
            self._bin_dir = bin_dir
            self._runner = _Runner(bin_dir=bin_dir, run_as=self._run_as)
        return self._runner

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _prepare_dirs(self, runner: _Runner) -> None:
        """Create the private work dir (data, socket, log) and link it as ``base_dir/pg``."""
        self._base_dir.mkdir(parents=True, exist_ok=True)
        work_dir = Path(tempfile.mkdtemp(prefix=_PRIVATE_PREFIX, dir=_work_root()))
        private = [work_dir]
        (work_dir / "owner").write_text(_owner_tag())
        self._chown(work_dir)
        links: list[Path] = []
        link = self._base_dir / "pg"
        with contextlib.suppress(OSError):
            link.symlink_to(work_dir, target_is_directory=True)
            links.append(link)
        socket_dir = work_dir / "sock"
        if len(str(socket_dir)) > _MAX_SOCKET_DIR_LEN:
            socket_dir = Path(tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}sock-", dir="/tmp"))
            private.append(socket_dir)
        else:
            socket_dir.mkdir()
        self._chown(socket_dir)
        self._work_dir, self._socket_dir = work_dir, socket_dir
        self._finalizer = weakref.finalize(
            self, _shutdown, runner, self.data_dir, self._procs, tuple(private), tuple(links)
        )

    def _initdb(self, runner: _Runner) -> None:
        result = runner.run(
            [
                runner.tool("initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # fsync is off anyway; saves seconds per cluster
            ],
            cwd=self._work_dir,
            timeout=300,
        )
        if result.returncode != 0:
            raise PostgresClusterError(
                f"initdb failed (exit {result.returncode}) for {self.data_dir}:\n"
                f"{_tail(result.stdout + result.stderr)}"
            )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Added by tests/support/postgres.py\ninclude 'test_overrides.conf'\n")

    def _write_settings(self, port: int) -> None:
        """Write listen/port/socket and speed settings; a file keeps quoting simple."""
        assert self._socket_dir is not None
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": str(self._socket_dir),
            **_SPEED_SETTINGS,
        }
        path = self.data_dir / "test_overrides.conf"
        path.write_text("".join(f"{key} = {_conf_quote(val)}\n" for key, val in settings.items()))
        self._chown(path)

    def _wait_ready(
        self, runner: _Runner, proc: subprocess.Popen[bytes], port: int, timeout: float = 60
    ) -> str | None:
        """Poll until our server accepts TCP connections; return why not, or None.

        Also checks that whoever answers on the port serves *our* data directory, in case
        another process grabbed the port between choosing it and binding it.
        """
        isready = [runner.tool("pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "2"]
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                return f"postgres exited with code {proc.returncode}"
            if runner.run(isready, as_server_user=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                return f"not accepting connections after {timeout}s"
            time.sleep(0.05)
        self._port = port
        try:
            data_dir, version = (
                self.execute(
                    "SELECT current_setting('data_directory') || '|' "
                    "|| current_setting('server_version_num')"
                )
                .strip()
                .split("|")
            )
        except (PostgresClusterError, ValueError) as exc:
            return f"post-start check failed: {exc}"
        if Path(data_dir).resolve() != self.data_dir.resolve():
            return f"port {port} is served by another cluster ({data_dir})"
        self._server_version_num = int(version)
        return None

    def _kill_failed_start(self, runner: _Runner) -> None:
        with contextlib.suppress(PostgresClusterError):
            if runner.is_running(self.data_dir):
                runner.pg_ctl(self.data_dir, "stop", "-m", "immediate", "-w", "-t", "30")
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        _reap(self._procs)

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"<server log unavailable: {exc}>"
