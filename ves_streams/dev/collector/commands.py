"""``ves-streams collector``: run the local VES collector.

The password is never a command-line argument (``ps`` would show it): it is
read from the environment variable named by ``--password-env`` when the
collector starts, and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ves_streams.dev.collector.config import (
    DEFAULT_PASSWORD_ENV,
    BasicAuthCredentials,
    CollectorConfig,
    Secret,
    rejected_path_for,
)
from ves_streams.dev.collector.errors import CollectorConfigError

__all__ = ["register", "config_from_args", "run_collector"]


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> CollectorConfig:
    """Build and check the settings; raise :class:`CollectorConfigError` naming the flag at fault."""
    auth = None
    if args.username is not None:
        password = environ.get(args.password_env, "")
        if not password:
            raise CollectorConfigError(
                f"--username {args.username!r} needs a password in the environment variable {args.password_env} "
                "(set it, or name another with --password-env)"
            )
        auth = BasicAuthCredentials(username=args.username, password=Secret(password))
    record_rejected = args.record_rejected
    if record_rejected is None and args.record is not None:
        record_rejected = rejected_path_for(args.record)
    return CollectorConfig(
        host=args.host,
        port=args.port,
        record=args.record,
        record_rejected=record_rejected,
        auth=auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        control=args.control,
        quiet=args.quiet,
    ).checked()


def run_collector(args: argparse.Namespace) -> int:
    """Handler of ``ves-streams collector``: 0 after a clean stop, 2 for bad settings, 1 when it cannot serve."""
    from ves_streams.dev.collector import schema as ves_schema
    from ves_streams.dev.collector.server import serve

    try:
        config = config_from_args(args, os.environ)
        config.ssl_context()  # fail before binding when the files do not load
        for major in ves_schema.SUPPORTED_MAJORS:
            ves_schema.validate_event({}, major)  # loads and compiles the schema now, not on the first event
    except (CollectorConfigError, ves_schema.VesSchemaError) as exc:
        print(f"ves-streams collector: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    except OSError as exc:
        print(f"ves-streams collector: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "collector",
        help="run a local VES collector (event listener v5/v7) that validates and records events",
        description="A VES event listener for development and tests: validates each event against "
        "the shipped VES schemas (schemas/ves-{5,7}.json), answers 202 or a VES requestError, and records accepted events as JSON lines.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=30000, help="listen port; 0 picks a free one (default %(default)s)")
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="append accepted events here, one JSON line per event")
    parser.add_argument("--record-rejected", type=Path, metavar="FILE",
                        help="append refused requests here (default: <record>.rejected.jsonl next to --record)")
    parser.add_argument("--username", help="require HTTP Basic auth with this user")
    parser.add_argument("--password-env", default=DEFAULT_PASSWORD_ENV, metavar="VAR",
                        help="environment variable holding the Basic auth password (default %(default)s)")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, metavar="FILE",
                        help="require client certificates signed by this PEM CA bundle (mutual TLS)")
    parser.add_argument("--control", action="store_true",
                        help="enable POST /_control fault injection (503/429 windows, delays, refused event ids)")
    parser.add_argument("--quiet", action="store_true", help="no console line per event")
    parser.set_defaults(handler=run_collector)
