#!/usr/bin/env python3
"""Install, start, stop and inspect hubstream's local stack.

The parts are the real servers, started from the project's own files:

* kafka     Apache Kafka 4 in KRaft mode (one JVM is broker and controller), jars from Maven
            Central through deploy/local/kafka/pom.xml.
* postgres  a PostgreSQL cluster of the project's own, made with initdb and run with pg_ctl
            (as an unprivileged user when run as root).
* registry  Apicurio Registry (Confluent-compatible API under /apis/ccompat/v7), from Maven
            Central through deploy/local/registry/pom.xml, storing schemas in the `registry`
            database of the PostgreSQL part (so ids survive a restart).
* keycloak  Keycloak 26, the identity provider, from Maven Central through
            deploy/local/keycloak/pom.xml, run on Java 21 or later with dev-file storage, and
            the realm `hubstream` the project declares (roles, authorities, users, OIDC client).

Standard library only: it runs with the system python3 before any virtualenv exists.
Ports and the state directory come from hubstream/settings.py (HUBSTREAM_* variables);
everything this script writes lives under HUBSTREAM_HOME, never in the source tree.

The code is in the package stackparts/ beside this file: one module per part (kafka, postgres,
registry, keycloak) over one shared runner, and cli for the commands. This file is the command,
and every name of those modules can still be read from it (tests load it by path, e.g. for its
Kafka wire client: `Endpoint`, `kafka_connection`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_parts() -> None:
    """Import stackparts from beside this file, without adding this directory to sys.path
    (it holds folders named kafka/ and keycloak/ that must not shadow anything)."""
    if "stackparts" in sys.modules:
        return
    package = Path(__file__).resolve().parent / "stackparts"
    spec = importlib.util.spec_from_file_location(
        "stackparts", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"stack: cannot load {package}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["stackparts"] = module
    spec.loader.exec_module(module)


_load_parts()

from stackparts import cli, kafka, keycloak, postgres, registry, runner  # noqa: E402

for _module in (runner, kafka, postgres, registry, keycloak, cli):
    globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})

if __name__ == "__main__":
    sys.exit(cli.main())
