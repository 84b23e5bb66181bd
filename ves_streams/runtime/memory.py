"""How the worker process asks glibc's allocator to hold less memory.

glibc gives each thread that finds the main heap busy an arena of its own
(up to eight per core), and memory freed in one arena is not reused by
another. A worker's threads (the side loop, the sink's HTTP requests,
Faust's and RocksDB's) each held partly empty arenas: bench, N = 1000, one
worker, the same code: peak RSS 205 MB with glibc's default, 194 MB with
two arenas, no change in CPU per value list or latency. The usual cure is
``MALLOC_ARENA_MAX=2`` in the environment, which an operator starting
``faust -A ves_streams worker`` by hand would not know to set; ``mallopt``
does the same from inside the process, for the threads started after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["MALLOC_ARENAS", "limit_malloc_arenas"]

log = logging.getLogger(__name__)

#: Arenas glibc may use (the main one and one more for the other threads).
MALLOC_ARENAS = 2
#: glibc's ``mallopt`` parameter number of ``M_ARENA_MAX`` (malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Limit glibc's malloc arenas to ``arenas``; True if it did.

    Does nothing (False) where the C library is not glibc, or when the
    operator set ``MALLOC_ARENA_MAX`` themselves (theirs wins).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it (and M_ARENA_MAX)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = mallopt(_M_ARENA_MAX, arenas) == 1
    if not done:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return done
