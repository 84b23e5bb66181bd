"""``ves-streams kafka``: fetch, start, stop and inspect the local broker.

``make kafka-fetch``, ``make kafka-up`` and ``make kafka-down`` call these.
The work is done by :mod:`ves_streams.dev.kafka` (imported only when a
command runs, so ``--help`` stays fast); this module turns its outcomes into
one line on stdout and an exit code, and its errors into one line on stderr
(``ves-streams kafka up: ...``) with exit code 1 and no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]

_DEFAULT_VERSION = "4.1.1"  # kept equal to kafka_local.DEFAULT_KAFKA_VERSION (checked by a test)


def register(subparsers: Any) -> None:
    """Add ``kafka`` with its sub-commands ``fetch``, ``up``, ``down`` and ``status``."""
    kafka = subparsers.add_parser(
        "kafka",
        help="fetch and run a local Apache Kafka (KRaft) broker",
        description="A local single-node KRaft broker on 127.0.0.1, fetched from Maven Central with mvn "
        "and cached under ~/.cache/ves-streams/kafka/. Needs Java 17+ and Maven.",
    )
    commands = kafka.add_subparsers(dest="kafka_command", metavar="SUBCOMMAND")
    commands.required = True

    fetch = commands.add_parser("fetch", help="download the broker jars (once; later calls need no network)")
    _add_version(fetch)
    fetch.set_defaults(handler=_guarded("fetch", _fetch))

    up = commands.add_parser("up", help="start a detached broker and wait until it accepts clients")
    _add_version(up)
    up.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1 (default: 9092)")
    up.add_argument("--controller-port", type=int, default=None, help="KRaft controller port (default: port + 1)")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the broker (default: 90)")
    up.add_argument(
        "--security", choices=("plaintext", "sasl_ssl"), default="plaintext",
        help="sasl_ssl: clients need TLS (a CA made for the run, hostname verified) and SASL/SCRAM-SHA-512 "
             "(a user made for the run); their settings are written to client.env (default: plaintext)",
    )  # fmt: skip
    _add_run_dir(up)
    up.set_defaults(handler=_guarded("up", _up))

    down = commands.add_parser("down", help="stop the broker started by `kafka up` (data is kept)")
    _add_run_dir(down)
    down.set_defaults(handler=_guarded("down", _down))

    status = commands.add_parser("status", help="say whether the broker of `kafka up` runs (exit 0) or not (exit 3)")
    _add_run_dir(status)
    status.set_defaults(handler=_guarded("status", _status))


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version", default=_DEFAULT_VERSION, metavar="X.Y.Z",
        help=f"Kafka version (default: {_DEFAULT_VERSION}; pinned: 4.1.1, 3.9.1)",
    )  # fmt: skip


def _add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", type=Path, default=None,
        help="where the pid file, state, log and data live "
             "(default: .run/kafka/ in the checkout, else in the current directory)",
    )  # fmt: skip


def _guarded(name: str, handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can act on into one stderr line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        from ves_streams.dev.kafka import KafkaLocalError

        try:
            return handler(args)
        except KafkaLocalError as exc:
            print(f"ves-streams kafka {name}: {exc.summary}", file=sys.stderr)
            return 1
        except OSError as exc:  # unwritable run or cache directory, java/mvn not executable
            print(f"ves-streams kafka {name}: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"ves-streams kafka {name}: interrupted", file=sys.stderr)
            return 130

    return run


def _fetch(args: argparse.Namespace) -> int:
    from ves_streams.dev import kafka as kafka_local

    cached = kafka_local.is_fetched(args.version)
    libs = kafka_local.fetch_kafka(args.version)
    print(f"Kafka {args.version}: {'cached' if cached else 'fetched'} in {libs}")
    return 0


def _up(args: argparse.Namespace) -> int:
    from ves_streams.dev import kafka as kafka_local

    started = time.monotonic()
    fresh = kafka_local.kafka_up(
        args.version, args.port, controller_port=args.controller_port, run_dir=args.run_dir, timeout=args.timeout,
        security=args.security,
    )  # fmt: skip
    state = kafka_local.kafka_status(args.run_dir)
    env_file = kafka_local.client_env_path(args.run_dir)
    if not fresh:
        owner = f"Kafka {state.version}, pid {state.pid}" if state is not None else "not started by `kafka up`"
        print(f"Kafka already running on 127.0.0.1:{args.port} ({owner})")
        if args.security == "sasl_ssl" and env_file.exists():
            print(f"client settings: {env_file}")
        return 0
    if state is None:  # started, answered, then died at once
        log = (args.run_dir or kafka_local.default_run_dir()) / "kafka.log"
        raise kafka_local.KafkaStartError(f"Kafka started but exited right after answering; see {log}")
    where = f"localhost:{state.port} (SASL_SSL, SCRAM-SHA-512)" if args.security == "sasl_ssl" else f"127.0.0.1:{state.port}"
    print(
        f"Kafka {state.version} running on {where} (pid {state.pid}, "
        f"started in {time.monotonic() - started:.1f} s, log {state.log_path})"
    )
    if args.security == "sasl_ssl":
        print(f"client settings (VES_STREAMS_*, with the password): {env_file}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from ves_streams.dev import kafka as kafka_local

    state = kafka_local.kafka_status(args.run_dir)
    if kafka_local.kafka_down(args.run_dir):
        where = f" on 127.0.0.1:{state.port}" if state is not None else ""
        print(f"Kafka stopped{where}")
    else:
        print("Kafka was not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ves_streams.dev import kafka as kafka_local

    state = kafka_local.kafka_status(args.run_dir)
    if state is None:
        print("Kafka is not running")
        return 3
    print(f"Kafka {state.version} running on 127.0.0.1:{state.port} (pid {state.pid}, log {state.log_path})")
    return 0
