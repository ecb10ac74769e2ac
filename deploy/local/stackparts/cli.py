"""The stack's commands (install, up, down, status, clean, logs) over its parts."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .kafka import Kafka
from .keycloak import Keycloak
from .postgres import Postgres
from .registry import Registry
from .runner import DEFAULT_TIMEOUT_S, Config, StackError, say, stack_lock, tail

PART_NAMES = ("kafka", "postgres", "registry", "keycloak")

Part = Kafka | Postgres | Registry | Keycloak


def parts_for(config: Config, names: Sequence[str]) -> list[Part]:
    chosen = names or PART_NAMES
    postgres = Postgres(config)
    table: dict[str, Part] = {
        "kafka": Kafka(config),
        "postgres": postgres,
        "registry": Registry(config, postgres),
        "keycloak": Keycloak(config),
    }
    return [table[name] for name in PART_NAMES if name in chosen]


def cmd_install(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    started = time.monotonic()
    with stack_lock(config.home):
        for part in parts:
            part.install()
    print(f"stack: installed in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def cmd_up(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    started = time.monotonic()
    with stack_lock(config.home):
        for part in parts:
            part.up()
    print(f"stack: up in {time.monotonic() - started:.1f}s (state in {config.home})", flush=True)
    return 0


def cmd_down(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    with stack_lock(config.home):
        failures = 0
        for part in reversed(parts):  # stop consumers of a part before the part
            try:
                part.down()
            except StackError as exc:
                print(exc.render(), file=sys.stderr)
                failures += 1
    return 1 if failures else 0


def cmd_status(config: Config, parts: list[Part], _args: argparse.Namespace) -> int:
    for part in parts:
        try:
            state = part.status()
        except StackError as exc:
            state = f"unknown ({exc})"
        print(f"{part.name:<9} {part.address:<45} {state}", flush=True)
    return 0


def clean_set(named: set[str]) -> set[str]:
    """The parts `clean` removes the state of, given those named. Kafka's data and the registry's
    database go together (see cmd_clean); Keycloak's state is its own, so naming only Keycloak
    cleans only Keycloak."""
    if named & {"kafka", "postgres", "registry"}:
        return named | {"kafka", "registry"}
    return set(named)


def cmd_clean(config: Config, parts: list[Part], args: argparse.Namespace) -> int:
    # Messages in Kafka carry registry schema ids, and the registry's database lives in the
    # PostgreSQL cluster: removing any one of the three without the others would leave ids
    # that point at nothing, or at a different schema once new ones are registered.
    # So Kafka's data and the registry's database are always removed together.
    names = clean_set({part.name for part in parts})
    added = sorted(names - {part.name for part in parts})
    if added:
        print(
            f"stack: also cleaning {' and '.join(added)}: Kafka's data and the registry's "
            "database are always removed together (messages carry schema ids)",
            flush=True,
        )
    parts = parts_for(config, sorted(names))
    if cmd_down(config, parts, args) != 0:
        print("stack: not removing state while something is still running", file=sys.stderr)
        return 1
    with stack_lock(config.home):
        for part in parts:
            part.clean(args.all)
            kept = " (downloads kept)" if not args.all and not isinstance(part, Postgres) else ""
            say(part.name, f"state removed{kept}")
    return 0


def cmd_logs(config: Config, parts: list[Part], args: argparse.Namespace) -> int:
    for part in parts:
        for log_file in part.logs():
            print(f"==> {part.name}: {log_file} <==", flush=True)
            if log_file.exists():
                print("\n".join(tail(log_file, args.lines)), flush=True)
            else:
                print("(no log yet)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack.py",
        description="hubstream's local stack: Kafka (KRaft), PostgreSQL, the schema registry and "
        "Keycloak, run from the project's own files with state under HUBSTREAM_HOME "
        "(default <project>/.local). Ports come from HUBSTREAM_KAFKA_PORT, "
        "HUBSTREAM_KAFKA_CONTROLLER_PORT, HUBSTREAM_PG_PORT, HUBSTREAM_REGISTRY_PORT, "
        "HUBSTREAM_KEYCLOAK_PORT and HUBSTREAM_KEYCLOAK_MANAGEMENT_PORT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "parts", nargs="*", metavar="PART", help=f"which parts ({', '.join(PART_NAMES)}); default all"
        )
        sub.set_defaults(handler=handler)
        return sub

    add(
        "install",
        "Fetch what the stack needs (Kafka jars via Maven, PostgreSQL server via apt if "
        "missing, the registry and Keycloak via Maven, Keycloak's server build). Quick when "
        "already done.",
        cmd_install,
    )
    up = add(
        "up",
        "Install if needed, start each part and wait until it answers. "
        "Does nothing for a part that is already up.",
        cmd_up,
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for each part to answer (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    add(
        "down",
        "Stop what this stack started (TERM, then KILL after a timeout; "
        "pg_ctl stop -m fast). Safe to repeat.",
        cmd_down,
    )
    add("status", "Print each part, its address and whether it answers. Always exits 0.", cmd_status)
    clean = add(
        "clean",
        "Stop the stack, then delete its state (broker data, database cluster, Keycloak's "
        "database, logs). Kafka's data and the registry's database are always deleted together, "
        "whichever of kafka, postgres and registry are named. Downloaded jars are kept unless --all.",
        cmd_clean,
    )
    clean.add_argument("--all", action="store_true", help="also delete downloaded jars and archives")
    logs = add("logs", "Print the last lines of each part's log.", cmd_logs)
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines per log (default 40)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = Config.from_settings(getattr(args, "timeout", DEFAULT_TIMEOUT_S))
    except ValueError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 0 if args.command == "status" else 2
    unknown = [name for name in args.parts if name not in PART_NAMES]
    if unknown:
        print(f"stack: unknown part {unknown[0]!r}; choose from {', '.join(PART_NAMES)}", file=sys.stderr)
        return 2
    parts = parts_for(config, args.parts)
    try:
        return int(args.handler(config, parts, args))
    except StackError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstack: interrupted", file=sys.stderr)
        return 130
