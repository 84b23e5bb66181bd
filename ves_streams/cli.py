"""The ``ves-streams`` command line.

Each area owns its commands in a ``commands`` module exposing
``register(subparsers)``; this module only assembles them, so ``--help``
lists every command without importing Faust or starting anything.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute sub-commands, in the order ``--help`` shows them.
COMMAND_MODULES: tuple[str, ...] = (
    "ves_streams.rules.commands",
    "ves_streams.rules.shipped",
    "ves_streams.dev.collector.commands",
    "ves_streams.dev.kafka_commands",
    "ves_streams.notification_relay",
    "ves_streams.alarm_commands",
    "ves_streams.barometer_settings",
    "ves_streams.dlq_commands",
    "ves_streams.dev.replay",
    "ves_streams.dev.run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ves-streams",
        description="collectd -> Kafka -> VES: rule checks, rendering, a local VES collector "
        "and a local Kafka. Start workers with `faust -A ves_streams worker`.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result = args.handler(args)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
