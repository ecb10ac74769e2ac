"""The schema registry: Apicurio Registry from Maven Central, storing schemas in PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from .postgres import PG_REGISTRY_ROLE, Postgres
from .runner import (
    DEPLOY_DIR,
    LOOPBACK,
    Config,
    StackError,
    ensure_port_free,
    fetch_with_maven,
    file_digest,
    java_bin,
    mvn_bin,
    port_open,
    process_alive,
    read_pid,
    remove,
    rss_mib,
    say,
    spawn,
    stop_pid,
    wait_until,
)


class Registry:
    """Apicurio Registry with its storage in the stack's own PostgreSQL (database `registry`).

    The storage must outlive the process: Kafka keeps messages framed with schema ids, and a
    registry that forgot them would hand the same ids to other schemas after a restart.
    """

    name = "registry"
    database = "registry"
    role = PG_REGISTRY_ROLE

    def __init__(self, config: Config, postgres: Postgres) -> None:
        self.config = config
        self.postgres = postgres
        self.root = config.home / "registry"
        self.dist = self.root / "dist"
        self.log_file = self.root / "registry.log"
        self.pid_file = self.root / "registry.pid"
        # sha256 of the database password the running registry was started with: a registry
        # started before the role's password changed must be restarted to log in again.
        self.credential_file = self.root / "datasource.sha256"
        self.pom = DEPLOY_DIR / "registry" / "pom.xml"
        self.marker_file = self.dist / ".installed"

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.config.registry_port}/apis/ccompat/v7"

    @property
    def available(self) -> bool:
        return self.pom.exists()

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://{LOOPBACK}:{self.config.pg_port}/{self.database}"

    def installed(self) -> bool:
        try:
            return self.marker_file.read_text().strip() == file_digest(self.pom)
        except OSError:
            return False

    def runner(self) -> Path:
        # 3.0.x ships a runner jar beside lib/; later releases a quarkus-app/ directory.
        for candidate in (*self.dist.glob("*-runner.jar"), self.dist / "quarkus-app" / "quarkus-run.jar"):
            if candidate.exists():
                return candidate
        raise StackError(self.name, f"no quarkus-run.jar or *-runner.jar in {self.dist}")

    def install(self) -> None:
        if not self.available:
            say(self.name, "skipped (no registry build available; see deploy/local/README.md)")
            return
        if self.installed():
            say(self.name, f"present in {self.dist}")
            return
        mvn = mvn_bin(self.name)
        started = time.monotonic()
        say(self.name, f"fetching Apicurio Registry with Maven into {self.dist} ...", end=" ")
        fetch_with_maven(self.name, mvn, self.pom, self.root, self.dist, self.runner)
        self.marker_file.write_text(file_digest(self.pom) + "\n")
        print(f"done in {time.monotonic() - started:.1f}s", flush=True)

    def pid(self) -> int | None:
        pid = read_pid(self.pid_file)
        return pid if pid is not None and process_alive(pid, str(self.dist)) else None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.address}/subjects", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def up(self) -> None:
        if not self.available:
            say(self.name, "skipped (no registry build available; see deploy/local/README.md)")
            return
        self.install()
        # PostgreSQL's up also (re)applies roles, passwords and pg_hba.conf: always once per run.
        if not self.postgres.secured:
            self.postgres.up()
        credential = hashlib.sha256(self.postgres.password(self.role).encode()).hexdigest()
        started = time.monotonic()
        pid = self.pid()
        if pid is not None:
            current = self.credential_file.read_text().strip() if self.credential_file.exists() else ""
            if not hmac.compare_digest(current, credential):
                say(self.name, "running with another database password; restarting to use the current one")
                self.down()
            elif self.answers():
                say(self.name, f"already running on {self.address} (pid {pid})")
                return
            else:
                say(self.name, f"pid {pid} is running but not answering yet; waiting ...", end=" ")
                wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file)
                return
        ensure_port_free(self.name, self.config.registry_port, "registry")
        java = java_bin(self.name)
        self.postgres.ensure_database(self.database, self.role, private=True)
        started = time.monotonic()
        say(self.name, f"starting on {self.address} (storage: {self.jdbc_url}) ...", end=" ")
        proc = spawn(
            [
                java,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
                f"-Dquarkus.http.port={self.config.registry_port}",
                f"-Dquarkus.http.host={LOOPBACK}",
                # Property names from the runner jar's application.properties (3.0.9); the
                # registry creates its tables on first start (apicurio.sql.init=true).
                "-Dapicurio.storage.kind=sql",
                "-Dapicurio.storage.sql.kind=postgresql",
                f"-Dapicurio.datasource.url={self.jdbc_url}",
                f"-Dapicurio.datasource.username={self.role}",
                # apicurio.datasource.password comes from APICURIO_DATASOURCE_PASSWORD (below):
                # Quarkus maps the variable to the property, and the environment, unlike the
                # command line, is not readable by other users.
                # The defaults (20 initial, 100 max) would take every connection of a server
                # whose max_connections is 100 and which the project's own sinks share.
                "-Dapicurio.datasource.jdbc.initial-size=2",
                "-Dapicurio.datasource.jdbc.min-size=2",
                "-Dapicurio.datasource.jdbc.max-size=10",
                "-jar",
                self.runner(),
            ],
            self.log_file,
            self.root,
            env=dict(os.environ, APICURIO_DATASOURCE_PASSWORD=self.postgres.password(self.role)),
        )
        self.pid_file.write_text(f"{proc.pid}\n")
        self.credential_file.write_text(credential + "\n")
        wait_until(self.name, self.answers, started, self.config.timeout_s, self.log_file, proc)

    def down(self) -> None:
        pid = self.pid()
        if pid is None:
            say(self.name, "not running")
        else:
            stop_pid(self.name, pid, str(self.dist))
        self.pid_file.unlink(missing_ok=True)
        self.credential_file.unlink(missing_ok=True)

    def status(self) -> str:
        if not self.available:
            return "not available (see deploy/local/README.md)"
        pid = self.pid()
        if pid is None:
            return "down" + (
                " (port taken by another process)" if port_open(self.config.registry_port) else ""
            )
        state = "up" if self.answers() else "running, NOT answering"
        rss = rss_mib(pid)
        return f"{state} (pid {pid}, rss {rss:.0f} MiB)" if rss is not None else f"{state} (pid {pid})"

    def clean(self, everything: bool) -> None:
        for path in (self.pid_file, self.log_file, self.log_file.with_name(self.log_file.name + ".1")):
            remove(path)
        self._drop_database()
        if everything:
            remove(self.root)

    def _drop_database(self) -> None:
        """Drop the schemas; `clean` removes Kafka's data in the same run (see cmd_clean)."""
        if not self.postgres.cluster_exists():
            return  # cleaned with postgres, or never created: the database went with the cluster
        was_running = self.postgres.pid() is not None
        if not was_running:
            self.postgres.up()
        try:
            self.postgres.drop_database(self.database)
        finally:
            if not was_running:
                self.postgres.down()

    def logs(self) -> list[Path]:
        return [self.log_file]
