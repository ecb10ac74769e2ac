#!/usr/bin/env python3
"""Install, start, stop and check a real Prometheus server that scrapes hubstream's processes.

* install   the Debian `prometheus` package (server and promtool) when /usr/bin/prometheus is
            missing, without leaving the package's own service running on port 9090.
* start     /usr/bin/prometheus in the background on 127.0.0.1, with a pid file; returns once
            /-/ready answers.
* stop      the server named by the pid file (only if that pid is still a prometheus process).
* check     promtool on a configuration file and the rule files it loads.

Standard library only, like deploy/local/stack.py: it runs with the system python3.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
LOOPBACK = "127.0.0.1"
PACKAGE_PORT = 9090  # where the Debian package's own service would listen
DEFAULT_PORT = 19090  # next to the stack's 19xxx ports, clear of a system Prometheus on 9090
DEFAULT_CONFIG = HERE / "prometheus.yml"
DEFAULT_STATE = Path(os.environ.get("HUBSTREAM_HOME", str(PROJECT_ROOT / ".local"))) / "prometheus"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


class PrometheusError(Exception):
    """A step failed; the message says which step and, where there is one, which log to read."""


def _log(message: str) -> None:
    print(f"prometheus: {message}", file=sys.stderr, flush=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((LOOPBACK, port)) == 0


def version() -> str:
    if not PROMETHEUS.exists():
        return "not installed"
    out = subprocess.run([str(PROMETHEUS), "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


# -- install ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Tell the package's maintainer scripts not to start services (invoke-rc.d honours exit 101).

    An existing policy (container images often ship one) is left exactly as it was.
    """
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# hubstream: no services started during package installs\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log("apt-get " + " ".join(args))
    result = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise PrometheusError(f"apt-get {' '.join(args)} failed (exit {result.returncode}):\n{tail}")


def _package_known() -> bool:
    """Whether apt's package lists already offer a `prometheus` candidate."""
    result = subprocess.run(
        ["apt-cache", "policy", "prometheus"], capture_output=True, text=True, check=False
    )
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("Candidate:"):
            return line.split(":", 1)[1].strip() not in ("", "(none)")
    return False


def install() -> None:
    if PROMETHEUS.exists() and PROMTOOL.exists():
        _log(f"already installed: {version()}")
    else:
        if os.geteuid() != 0:
            raise PrometheusError("installing the Debian prometheus package needs root (apt-get)")
        if shutil.which("apt-get") is None:
            raise PrometheusError(
                "apt-get not found: install Prometheus 2.x so that /usr/bin/prometheus exists"
            )
        if not _package_known():
            _apt("update")
        with _services_not_started():
            # No recommends: they pull in exporters that would start their own listeners.
            _apt("install", "-y", "--no-install-recommends", "prometheus")
        if not PROMETHEUS.exists():
            raise PrometheusError(f"the prometheus package installed but {PROMETHEUS} is missing")
        _log(f"installed: {version()}")
    if _listening(PACKAGE_PORT):
        # Not ours to stop (it may be someone's real server); say so rather than kill it.
        _log(
            f"warning: something listens on {LOOPBACK}:{PACKAGE_PORT}; hubstream's server uses --port "
            f"(default {DEFAULT_PORT}), so it does not clash, but check it is not a leftover package service"
        )
    else:
        _log(f"nothing listens on {PACKAGE_PORT}: no package service was left running")


# -- start and stop --------------------------------------------------------------------------


def _pid_alive_prometheus(pid: int) -> bool:
    """True when pid is a running prometheus (a pid file can outlive its process and be reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False
    return bool(cmdline) and Path(cmdline[0].decode(errors="replace")).name == "prometheus"


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    config: Path, port: int, data: Path, pid_file: Path, log_file: Path, timeout_s: float, retention: str
) -> int:
    if not PROMETHEUS.exists():
        raise PrometheusError(f"{PROMETHEUS} not found: run `{Path(__file__).name} install` first")
    if not config.is_file():
        raise PrometheusError(f"--config {config}: no such file")
    running = _read_pid(pid_file)
    if running is not None and _pid_alive_prometheus(running):
        raise PrometheusError(f"already running as pid {running} (pid file {pid_file}); stop it first")
    if _listening(port):
        raise PrometheusError(f"--port {port}: {LOOPBACK}:{port} is already in use")
    data.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(PROMETHEUS),
        f"--config.file={config.resolve()}",
        f"--web.listen-address={LOOPBACK}:{port}",
        f"--storage.tsdb.path={data.resolve()}",
        f"--storage.tsdb.retention.time={retention}",
        "--web.enable-lifecycle",
    ]
    with log_file.open("ab") as log:
        # Its own session, so it outlives this script and a terminal's Ctrl-C does not reach it.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=data,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout_s
    while not _ready(port):
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise PrometheusError(
                f"exited with status {process.returncode} before it was ready; "
                f"log {log_file}:\n{_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            _terminate(process.pid)
            pid_file.unlink(missing_ok=True)
            raise PrometheusError(
                f"not ready on {LOOPBACK}:{port} after {timeout_s:.0f}s; log {log_file}:\n{_tail(log_file)}"
            )
        time.sleep(0.25)
    _log(f"ready on http://{LOOPBACK}:{port} (pid {process.pid}, data {data}, log {log_file})")
    return process.pid


def _terminate(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive_prometheus(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    # Reap it when it was our own child (start's timeout path); otherwise its parent is gone.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop(pid_file: Path) -> bool:
    pid = _read_pid(pid_file)
    if pid is None:
        _log(f"not running (no pid file {pid_file})")
        return False
    if not _pid_alive_prometheus(pid):
        _log(f"not running (pid {pid} from {pid_file} is gone)")
        pid_file.unlink(missing_ok=True)
        return False
    _terminate(pid)
    pid_file.unlink(missing_ok=True)
    _log(f"stopped pid {pid}")
    return True


def check(config: Path) -> None:
    if not PROMTOOL.exists():
        raise PrometheusError(f"{PROMTOOL} not found: run `{Path(__file__).name} install` first")
    # `check config` also checks every rule file the configuration loads.
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    sys.stdout.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise PrometheusError(f"promtool check config {config} failed (exit {result.returncode})")


# -- command line ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prometheus.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "install", help="apt-get install the Debian prometheus package if /usr/bin/prometheus is missing"
    )

    state = DEFAULT_STATE
    p_start = sub.add_parser("start", help="start the server in the background and wait until it is ready")
    p_start.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="prometheus.yml (default: %(default)s)"
    )
    p_start.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="listen on 127.0.0.1:PORT (default: %(default)s)"
    )
    p_start.add_argument(
        "--data", type=Path, default=state / "data", help="TSDB directory (default: %(default)s)"
    )
    p_start.add_argument(
        "--pid-file",
        type=Path,
        default=None,
        help="pid file (default: prometheus.pid beside the data directory)",
    )
    p_start.add_argument(
        "--log",
        type=Path,
        default=None,
        help="server log (default: prometheus.log beside the data directory)",
    )
    p_start.add_argument(
        "--retention", default="15d", help="--storage.tsdb.retention.time (default: %(default)s)"
    )
    p_start.add_argument(
        "--timeout",
        type=float,
        default=START_TIMEOUT_S,
        help="seconds to wait for /-/ready (default: %(default)s)",
    )

    p_stop = sub.add_parser("stop", help="stop the server named by the pid file")
    p_stop.add_argument(
        "--data",
        type=Path,
        default=state / "data",
        help="the data directory given to start (finds the pid file beside it)",
    )
    p_stop.add_argument("--pid-file", type=Path, default=None, help="pid file (overrides --data)")

    p_check = sub.add_parser("check", help="promtool check config (and the rule files it loads)")
    p_check.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: %(default)s")

    sub.add_parser("version", help="print the installed Prometheus version")
    return parser


def _beside(data: Path, name: str) -> Path:
    # Beside, not inside: the TSDB directory holds only what Prometheus writes there.
    return data.resolve().parent / name


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "install":
            install()
        elif args.command == "start":
            start(
                args.config,
                args.port,
                args.data,
                args.pid_file or _beside(args.data, "prometheus.pid"),
                args.log or _beside(args.data, "prometheus.log"),
                args.timeout,
                args.retention,
            )
        elif args.command == "stop":
            stop(args.pid_file or _beside(args.data, "prometheus.pid"))
        elif args.command == "check":
            check(args.config)
        elif args.command == "version":
            print(version())
    except PrometheusError as exc:
        _log(f"{args.command}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
