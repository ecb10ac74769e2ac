"""What every part of the local stack shares: settings, errors, processes, ports, downloads.

Standard library only, like the rest of the stack: it runs with the system python3 before any
virtualenv exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

DEPLOY_DIR = Path(__file__).resolve().parent.parent  # deploy/local
PROJECT_ROOT = DEPLOY_DIR.parent.parent
LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class StackError(Exception):
    """A part failed; the message names the part and, where there is one, the log to read."""

    def __init__(self, part: str, message: str, log_file: Path | None = None) -> None:
        self.part = part
        self.log_file = log_file
        super().__init__(message)

    def render(self) -> str:
        lines = [f"{self.part}: ERROR: {self}"]
        if self.log_file is not None:
            lines.append(f"{self.part}: read {self.log_file}; its last lines:")
            lines.extend(f"    {line}" for line in tail(self.log_file, 25))
        return "\n".join(lines)


def say(part: str, message: str, end: str = "\n") -> None:
    print(f"{part}: {message}", end=end, flush=True)


def tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return [f"(cannot read {path}: {exc.strerror})"]
    return text.splitlines()[-count:] or ["(empty)"]


# --------------------------------------------------------------------------------------------
# Settings: read from hubstream/settings.py by file path, so the package's own imports
# (click, kafka-python, ...) are not needed before the virtualenv exists.


def load_settings() -> ModuleType:
    path = PROJECT_ROOT / "hubstream" / "settings.py"
    spec = importlib.util.spec_from_file_location("_hubstream_settings", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"stack: cannot load settings from {path}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves annotations through sys.modules, so register before executing.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"setting {name} must be a whole number, got {raw!r}") from None


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"setting {name} must be 1 or 0, got {raw!r}")


@dataclass(frozen=True)
class Config:
    home: Path
    kafka_port: int
    controller_port: int
    secure_port: int
    plaintext: bool
    secrets_dir: Path
    pg_port: int
    registry_port: int
    timeout_s: float
    keycloak_port: int = 18080
    keycloak_management_port: int = 18090

    @classmethod
    def from_settings(cls, timeout_s: float) -> Config:
        settings = load_settings().load()
        home = Path(settings.home).resolve()
        # Read through settings when it declares them, else straight from the environment, so
        # the stack works whichever of the two is updated first.
        secure_port = getattr(settings, "kafka_secure_port", None) or _env_port(
            "HUBSTREAM_KAFKA_SECURE_PORT", 19094
        )
        secrets_dir = (
            getattr(settings, "secrets_dir", None)
            or os.environ.get("HUBSTREAM_SECRETS_DIR")
            or (home / "secrets")
        )
        return cls(
            home=home,
            kafka_port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            secure_port=int(secure_port),
            # Transition default: the PLAINTEXT listener stays until every client uses the secure one.
            plaintext=_env_flag("HUBSTREAM_KAFKA_PLAINTEXT", False),
            secrets_dir=Path(secrets_dir).resolve(),
            pg_port=settings.pg_port,
            registry_port=settings.registry_port,
            timeout_s=timeout_s,
            keycloak_port=int(
                getattr(settings, "keycloak_port", None) or _env_port("HUBSTREAM_KEYCLOAK_PORT", 18080)
            ),
            keycloak_management_port=_env_port("HUBSTREAM_KEYCLOAK_MANAGEMENT_PORT", 18090),
        )


# --------------------------------------------------------------------------------------------
# Processes


def run(
    part: str,
    cmd: Sequence[str | Path],
    *,
    as_user: pwd.struct_passwd | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
    check: bool = True,
    new_session: bool = False,
    stdin_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise with its output in the message.

    stdin_text is fed to the command's standard input: the way to pass anything secret, which
    must never appear on a command line that every user can list.
    """
    argv = [str(c) for c in cmd]
    # Root hands commands to the unprivileged user with none of root's supplementary groups.
    drop = as_user is not None and os.geteuid() == 0 and as_user.pw_uid != 0
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            input=stdin_text if stdin_text is not None else "",
            capture_output=True,
            text=True,
            check=False,
            start_new_session=new_session,
            user=as_user.pw_uid if drop and as_user else None,
            group=as_user.pw_gid if drop and as_user else None,
            extra_groups=[] if drop else None,
        )
    except FileNotFoundError:
        raise StackError(part, f"command not found: {argv[0]}") from None
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        detail = "\n    ".join(output) if output else "(no output)"
        raise StackError(part, f"`{' '.join(argv)}` exited with {done.returncode}:\n    {detail}", log_file)
    return done


def spawn(
    cmd: Sequence[str | Path], log_file: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server detached from this terminal and process group, output to log_file.

    Secrets go in env: a process's environment is readable only by its own user, its command
    line by everyone.
    """
    if log_file.exists():
        log_file.replace(log_file.with_name(log_file.name + ".1"))
    with log_file.open("wb") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def process_alive(pid: int, marker: str) -> bool:
    """True if pid runs and its command line contains marker (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and marker in cmdline


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def group_rss_mib(pgid: int) -> float | None:
    """Resident memory of every process in the process group (a launcher script and its JVM)."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            rss = rss_mib(int(stat.parent.name))
            if rss is not None:
                total, found = total + rss, True
    return total if found else None


def stop_pid(part: str, pid: int, marker: str) -> None:
    """TERM the process (and its session's group), then KILL after STOP_TIMEOUT_S."""
    started = time.monotonic()
    say(part, f"stopping pid {pid} ...", end=" ")
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not process_alive(pid, marker):
                print(f"stopped in {time.monotonic() - started:.1f}s", flush=True)
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            print(f"still running after {wait_s:.0f}s, sending KILL ...", end=" ", flush=True)
    raise StackError(part, f"pid {pid} did not stop even after KILL")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(part: str, port: int, what: str) -> None:
    if port_open(port):
        raise StackError(
            part,
            f"{what} port {LOOPBACK}:{port} is already taken by a process this stack did not "
            f"start; stop it or choose another port with the HUBSTREAM_* variables",
        )


def apt_install(part: str, packages: Sequence[str]) -> None:
    if os.geteuid() != 0:
        raise StackError(
            part, f"{' '.join(packages)} missing; install it: sudo apt-get install -y {' '.join(packages)}"
        )
    say(part, f"installing Debian packages {' '.join(packages)} (apt-get) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(part, ["apt-get", "update", "-q"], env=env)
    run(part, ["apt-get", "install", "-y", "-q", *packages], env=env)


@contextlib.contextmanager
def stack_lock(home: Path) -> Iterator[None]:
    """One stack command at a time per HUBSTREAM_HOME (parallel test jobs may call `up`)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def java_bin(part: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        apt_install(part, ["openjdk-17-jre-headless"])
        found = shutil.which("java")
    if found is None:
        raise StackError(part, "java not found on PATH even after installing openjdk-17-jre-headless")
    return found


def java_major(java_home: Path) -> int | None:
    """The feature release (17, 21, 25, ...) of the Java installed at java_home, from its release file."""
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, re.MULTILINE)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major  # "1.8.0_x" is 8


def java_home_at_least(part: str, major: int, setting: str) -> Path:
    """A Java home of release `major` or later, for a part that needs a newer Java than the rest.

    The variable named by setting wins when set; then JAVA_HOME, if it is new enough; then the
    newest installation under /usr/lib/jvm (Debian's packages, Temurin's temurin-NN-jdk-ARCH).
    Only that part's processes are given it; the others keep java_bin's.
    """
    chosen = os.environ.get(setting, "")
    if chosen:
        found = java_major(Path(chosen))
        if found is None or found < major or not (Path(chosen) / "bin" / "java").exists():
            raise StackError(part, f"{setting}={chosen} is not a Java {major} or later (found {found})")
        return Path(chosen)
    candidates = [Path(p) for p in (os.environ.get("JAVA_HOME", ""),) if p]
    candidates += sorted(Path("/usr/lib/jvm").glob("*"))
    usable: dict[Path, int] = {}
    for candidate in candidates:
        found = java_major(candidate)
        if found is not None and found >= major and (candidate / "bin" / "java").exists():
            usable.setdefault(candidate.resolve(), found)
    if not usable:
        raise StackError(
            part,
            f"needs Java {major} or later and found none (JAVA_HOME, /usr/lib/jvm/*); install one "
            f"(e.g. Temurin {major}, or openjdk-{major}-jre-headless where Debian has it) or point "
            f"{setting} at it",
        )
    if os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"]).resolve() in usable:
        return Path(os.environ["JAVA_HOME"]).resolve()
    return max(usable, key=lambda home: (usable[home], str(home)))


def mvn_bin(part: str) -> str:
    found = shutil.which("mvn")
    if found is None:
        apt_install(part, ["maven"])
        found = shutil.which("mvn")
    if found is None:
        raise StackError(part, "mvn not found on PATH even after installing maven")
    return found


def file_digest(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def wait_until(
    part: str,
    ready: Callable[[], bool],
    started: float,
    timeout_s: float,
    log_file: Path,
    proc: subprocess.Popen[bytes] | None = None,
    label: str = "ready",
) -> None:
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            print("failed", flush=True)
            raise StackError(part, f"exited with code {proc.returncode} while starting", log_file)
        if ready():
            print(f"{label} in {time.monotonic() - started:.1f}s", flush=True)
            return
        time.sleep(0.25)
    print("timed out", flush=True)
    raise StackError(part, f"did not answer within {timeout_s:.0f}s (it is left running)", log_file)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never leaving it readable for a moment."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp creates it 0600
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_with_maven(
    part: str, mvn: str, pom: Path, root: Path, dist: Path, check: Callable[[], object] = lambda: None
) -> None:
    """The archive ``pom`` names (`mvn dependency:copy`), unpacked into ``dist`` and ``check``ed,
    both made anew. On failure it ends the caller's progress line with "failed" and raises."""
    download = root / "download"
    for path in (download, dist):
        remove(path)
    download.mkdir(parents=True)
    try:
        run(part, [mvn, "-q", "-B", "-f", pom, "dependency:copy", f"-DoutputDirectory={download}"])
        archives = sorted(download.glob("*.tar.gz")) + sorted(download.glob("*.zip"))
        if not archives:
            raise StackError(part, f"Maven fetched no archive into {download}")
        dist.mkdir()
        unpack(part, archives[0], dist)
        check()
    except StackError:
        print("failed", flush=True)
        raise
    remove(download)


def unpack(part: str, archive_path: Path, target: Path) -> None:
    """Extract a .tar.gz or .zip, refusing members that would land outside target."""
    root = target.resolve()
    if archive_path.name.endswith(".zip"):
        with zipfile.ZipFile(archive_path) as archive:
            names = archive.namelist()
            _check_members(part, archive_path, root, names)
            archive.extractall(target)
            # zipfile drops Unix modes: give back the execute bits (a distribution's bin/*.sh).
            for info in archive.infolist():
                mode = (info.external_attr >> 16) & 0o777
                if mode & 0o111 and not info.is_dir():
                    (target / info.filename).chmod(mode)
        return
    with tarfile.open(archive_path) as archive:
        members = archive.getmembers()
        _check_members(part, archive_path, root, [m.name for m in members])
        for member in members:
            if member.issym() or member.islnk() or member.isdev():
                raise StackError(
                    part, f"{archive_path} holds a link or device ({member.name}); not unpacking it"
                )
        # Python before 3.11.4 (Debian 12's) has no extraction filters; the checks above stand in.
        archive.extractall(target)


def _check_members(part: str, archive_path: Path, root: Path, names: list[str]) -> None:
    for name in names:
        if not (root / name).resolve().is_relative_to(root):
            raise StackError(part, f"{archive_path} member {name!r} points outside {root}; not unpacking it")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
