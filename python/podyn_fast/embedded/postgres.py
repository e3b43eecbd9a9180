"""A throw-away PostgreSQL server in a temporary directory, for tests, benchmarks and the demo."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["EmbeddedPostgres", "find_bindir"]

SUPERUSER = "postgres"

# The data is worthless after the run, so durability is traded for speed throughout.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Test suites and benchmarks open many connections at once (one per worker, plus fixtures).
    "max_connections": "200",
}
_SETTINGS_FILE = "podyn_embedded.conf"

# sun_path holds 107 bytes; leave room for "/.s.PGSQL.NNNNN" after the directory.
_MAX_SOCKET_DIR = 80
# Another process can take the port between our probe and the postmaster's bind; try a new one.
_PORT_ATTEMPTS = 3
_STOP_TIMEOUT = 30.0

_HOW_TO_GET = (
    "no PostgreSQL server binaries found (looked for initdb via `pg_config --bindir`, in "
    "/usr/lib/postgresql/*/bin and in the pgserver package). Install PostgreSQL "
    "(e.g. `apt-get install postgresql`), or `pip install pgserver` "
    "(the `podyn-fast[embedded]` extra), or set PODYN_TEST_DSN to the DSN of a server you run."
)

# Servers this process started and has not stopped yet; see _stop_all.
_running: set[EmbeddedPostgres] = set()


def find_bindir() -> Path:
    """Return the directory holding initdb, postgres and pg_isready.

    Raises:
        RuntimeError: when no PostgreSQL server binaries are installed.
    """
    for candidate in _candidate_bindirs():
        if (candidate / "initdb").is_file():
            return candidate
    raise RuntimeError(_HOW_TO_GET)


def _candidate_bindirs() -> Iterator[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        # On Debian pg_config can come from libpq-dev alone, naming a bindir without a server in it;
        # find_bindir then moves on to the next candidate.
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and result.stdout.strip():
            yield Path(result.stdout.strip())
    # Debian and Ubuntu install major versions side by side; the newest is the one to test against.
    yield from sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    # find_spec locates the package without importing it (pgserver's import has side effects).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        yield Path(spec.origin).parent / "pginstall" / "bin"


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def _service_user() -> str | None:
    """Return the unprivileged user to run the server as, or None to run it as ourselves.

    initdb and postgres refuse to run as root, and CI runs as root.
    """
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "podyn"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "podyn"],
        capture_output=True,
        text=True,
        check=False,
    )
    # Exit status 9: a concurrent test session created the user first, which is just as good.
    if result.returncode not in (0, 9):
        raise RuntimeError(f"cannot create the user `podyn` to run PostgreSQL as: {result.stderr.strip()}")
    return "podyn"


def _server_env() -> dict[str, str]:
    # PG* variables (PGHOST, PGPORT, PGDATA...) would redirect initdb and pg_isready elsewhere;
    # LC_ALL=C keeps server messages in English, which _launch searches.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedPostgres:
    """A PostgreSQL server of its own, trusting local connections, for one process's lifetime.

    Example:
        with EmbeddedPostgres() as server:
            psycopg.connect(server.dsn)

    Args:
        base_dir: where the data directory (``base_dir/data``) and the log go. None makes a fresh
            temporary directory that stop() removes; a given directory is kept, and a data directory
            already in it is reused.
        startup_timeout: seconds to wait for the server to accept connections.
        settings: server settings over the embedded defaults (which trade durability for speed).
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        startup_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self._given_dir = base_dir
        self._startup_timeout = startup_timeout
        self._settings = {**_SETTINGS, **(settings or {})}
        self._base_dir: Path | None = None
        self._socket_dir: Path | None = None
        self._owned_dirs: list[Path] = []
        self._port: int | None = None
        self._bindir: Path | None = None
        self._user: str | None = None
        # The server is our child (through runuser when we are root) rather than detached by pg_ctl:
        # we reap it, so no zombie postmaster lingers under an init that does not reap (containers,
        # this project's CI machine), and poll() tells a dead server from a live one for sure.
        self._process: subprocess.Popen[bytes] | None = None
        # A forked child inherits the atexit hook; only the process that started the server stops it.
        self._owner_pid = os.getpid()

    @property
    def dsn(self) -> str:
        """The libpq URI of the running server (TCP on 127.0.0.1, superuser, no password)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("the embedded PostgreSQL server is not started")
        return self._port

    @property
    def socket_dir(self) -> Path:
        """The directory holding the server's Unix socket (a libpq ``host``)."""
        return self._dirs()[1]

    @property
    def data_dir(self) -> Path:
        """The server's data directory."""
        return self._dirs()[0] / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._dirs()[0] / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server this object started runs, else None."""
        # Only our own child counts: a postmaster.pid left in a kept base_dir may name someone else's.
        if self._process is None or self._process.poll() is not None:
            return None
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> str:
        """Start the server unless it runs already, and return its DSN.

        Raises:
            RuntimeError: when there are no binaries, or initdb or the server fails (with the log's tail).
        """
        if self._port is not None and self.pid is not None:
            return self.dsn
        self._bindir = find_bindir()
        self._user = _service_user()
        _running.add(self)
        try:
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def stop(self) -> None:
        """Shut the server down fast and remove the directories it created; a dead server is fine."""
        _running.discard(self)
        if self._base_dir is None:
            return
        pid = self.pid
        if pid is not None:
            # SIGINT is PostgreSQL's fast shutdown: roll back open transactions, checkpoint, exit.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            if not self._wait_gone(pid, _STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            if self._process.poll() is None:
                # Still there: hung, or killed before it wrote postmaster.pid. Its session holds
                # runuser and the postmaster (start_new_session), so kill the whole group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
            self._process = None
        for path in self._owned_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._owned_dirs = []
        self._base_dir = self._socket_dir = None
        self._port = None

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _dirs(self) -> tuple[Path, Path]:
        if self._base_dir is None or self._socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL server is not started")
        return self._base_dir, self._socket_dir

    def _prepare_dirs(self) -> None:
        if self._base_dir is None:
            if self._given_dir is None:
                self._base_dir = Path(tempfile.mkdtemp(prefix="podyn-pg-"))
                self._owned_dirs.append(self._base_dir)
            else:
                self._base_dir = self._given_dir.resolve()
                self._base_dir.mkdir(parents=True, exist_ok=True)
            if len(str(self._base_dir)) <= _MAX_SOCKET_DIR:
                self._socket_dir = self._base_dir
            else:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="podyn-pgs-"))
                self._owned_dirs.append(self._socket_dir)
        base_dir, socket_dir = self._dirs()
        if self._user is not None:
            for path in (base_dir, socket_dir):
                self._give(path)
            # The server user must reach base_dir through its parents: /root is 0700, for one.
            probe = subprocess.run(
                ["runuser", "-u", self._user, "--", "test", "-w", str(base_dir)],
                capture_output=True,
                check=False,
            )
            if probe.returncode != 0:
                raise RuntimeError(
                    f"user {self._user!r} (PostgreSQL refuses to run as root) cannot write {base_dir}: "
                    "choose a base_dir whose parent directories it can search"
                )

    def _give(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _command(self, tool: str, *args: str) -> list[str]:
        assert self._bindir is not None
        command = [str(self._bindir / tool), *args]
        if self._user is not None:
            # runuser (util-linux) needs no password or tty, unlike su and sudo, and -u runs the
            # command directly rather than through the user's (nologin) shell.
            command = ["runuser", "-u", self._user, "--", *command]
        return command

    def _run(self, tool: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(tool, *args),
            # Our own cwd may be unreadable by the server user (root's home); initdb complains then.
            cwd=self._dirs()[0],
            env=_server_env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            *("-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER),
            # --no-locale: byte-order collation, the same on every machine; --no-sync: see _SETTINGS.
            *("--encoding", "UTF8", "--no-locale", "--no-sync"),
            timeout=300,
        )
        if result.returncode != 0:
            output = _tail(result.stdout + result.stderr)
            raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{output}")
        # The settings file is rewritten at every start (the port changes); postgresql.conf only includes it.
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude_if_exists = '{_SETTINGS_FILE}'\n")

    def _write_settings(self, port: int) -> None:
        settings = {**self._settings, "port": str(port), "unix_socket_directories": str(self.socket_dir)}
        path = self.data_dir / _SETTINGS_FILE
        path.write_text("".join(f"{name} = {_quote(value)}\n" for name, value in settings.items()))
        self._give(path)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (a fast shutdown: every session is cut) and, ``down_seconds`` later,
        start it again on the same port and data: for tests of clients that must ride it out."""
        port = self.port
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            if not self._wait_gone(pid, _STOP_TIMEOUT):
                raise RuntimeError(f"PostgreSQL (pid {pid}) did not stop within {_STOP_TIMEOUT:g}s")
        if self._process is not None:
            self._process.wait()
        time.sleep(down_seconds)
        self._launch(port)

    def _launch(self, fixed_port: int | None = None) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = fixed_port or _free_port()
            self._write_settings(port)
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self._give(self.log_path)
                self._process = subprocess.Popen(
                    self._command("postgres", "-D", str(self.data_dir)),
                    cwd=self._dirs()[0],
                    env=_server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own session: a Ctrl-C meant for pytest does not race our orderly stop().
                    start_new_session=True,
                )
            if self._wait_ready(port):
                self._port = port
                return
            exit_code = self._process.poll()
            output = self._read_log(log_start)
            if (
                exit_code is not None
                and "Address already in use" in output
                and attempt < _PORT_ATTEMPTS
                and not fixed_port
            ):
                continue
            # The tail goes into the message: stop() removes a temporary directory, log included.
            state = f"not ready after {self._startup_timeout:g}s" if exit_code is None else f"exited with {exit_code}"
            raise RuntimeError(f"PostgreSQL {state} (port {port}); its log ends:\n{_tail(output)}")

    def _wait_ready(self, port: int) -> bool:
        assert self._bindir is not None and self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        # Over TCP, as the clients connect; the postmaster.pid "ready" line would not prove the listener.
        command = [str(self._bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        while True:
            ready = subprocess.run([*command, "-U", SUPERUSER, "-t", "2"], env=_server_env(), check=False)
            if ready.returncode == 0:
                return True
            if self._process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _read_log(self, start: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(start)
                return log.read().decode(errors="replace")
        except OSError as error:
            return f"(no log: {error})"

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        # A direct child (not root: no runuser between us) stays a zombie until poll() reaps it.
        while _alive(pid) and (self._process is None or self._process.poll() is None):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@atexit.register
def _stop_all() -> None:
    # A test session that dies on an exception still runs atexit: no postgres outlives it.
    # (SIGKILL runs nothing; the server then lives on until the machine or CI cleans up.)
    for server in list(_running):
        if server._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                server.stop()
