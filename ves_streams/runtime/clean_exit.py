"""Exactly-once state on a reused disk: after an unclean exit, the local store is wiped and restored.

Under ``exactly_once`` a table change reaches the local store (RocksDB) at
once, but its changelog record only with the transaction that carries it,
which commits every few seconds. A worker SIGKILLed in between leaves a
local store *ahead* of its changelog: the samples stage's partition marker
then says a window was rendered whose events were aborted, and a worker
restarted on the same volume (a Kubernetes StatefulSet's pod) could take
the replayed tick for a duplicate and never render that window. Kafka
Streams solves this the same way: under exactly-once, a task whose state
directory has no checkpoint written at a clean close is wiped and restored
from its changelog (``TaskManager``/``ProcessorStateManager``).

So: the worker writes :data:`CLEAN_EXIT` into its table directory when it
stops cleanly, and removes it at start. At a start that finds table data
but no such file, the table data is removed first and Faust restores the
tables from their changelogs (committed records only). At-least-once keeps
its local store: there the marker is written only after the window's events
were acknowledged, so being ahead of the changelog loses nothing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

__all__ = ["CLEAN_EXIT", "mark_clean_exit", "wipe_after_unclean_exit"]

log = logging.getLogger(__name__)

#: Written in the table directory by a clean stop; its absence at start means the last exit was not.
CLEAN_EXIT = ".ves-streams-clean-exit"


def wipe_after_unclean_exit(tabledir: Path) -> bool:
    """Remove the table data in ``tabledir`` unless the last exit was clean; True when something was removed.

    Either way the clean-exit file is gone afterwards: this run has not
    exited cleanly yet.
    """
    marker = tabledir / CLEAN_EXIT
    if marker.exists():
        marker.unlink()
        return False
    if not tabledir.is_dir():
        return False
    entries = [p for p in tabledir.iterdir() if p.name != CLEAN_EXIT]
    if not entries:
        return False
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.warning(
        "the last exit was not clean and exactly_once is on: removed the local table data in %s "
        "(%d entries); the tables are restored from their changelogs", tabledir, len(entries),
    )  # fmt: skip
    return True


def mark_clean_exit(tabledir: Path) -> None:
    """Say that the tables in ``tabledir`` were closed after their last transaction committed."""
    tabledir.mkdir(parents=True, exist_ok=True)
    (tabledir / CLEAN_EXIT).write_bytes(b"")
