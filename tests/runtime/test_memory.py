"""The worker limits glibc's malloc arenas, unless the operator chose a number."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ves_streams.runtime.memory import limit_malloc_arenas


def _in_a_fresh_process(code: str, env: dict[str, str] | None = None) -> str:
    import os

    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environ.update(env or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_glibc_is_asked_for_two_arenas() -> None:
    import ctypes.util

    if not ctypes.util.find_library("c") or sys.platform != "linux":
        pytest.fail("this project's workers run on glibc Linux; so must this test")
    out = _in_a_fresh_process("""
        from ves_streams.runtime.memory import limit_malloc_arenas
        print(limit_malloc_arenas())
    """)
    assert out == "True"


def test_the_operators_malloc_arena_max_wins() -> None:
    out = _in_a_fresh_process("""
        from ves_streams.runtime.memory import limit_malloc_arenas
        print(limit_malloc_arenas())
    """, {"MALLOC_ARENA_MAX": "4"})
    assert out == "False"


def test_the_worker_entry_point_limits_the_arenas_before_building_the_app() -> None:
    out = _in_a_fresh_process("""
        import ves_streams.runtime.memory as memory
        calls = []
        real = memory.limit_malloc_arenas
        memory.limit_malloc_arenas = lambda *a: calls.append("limit") or real(*a)
        import ves_streams.app as app_module
        app = app_module.app
        print(calls, type(app).__name__)
    """, {"VES_STREAMS_APP_ID": "memory-test"})
    assert out == "['limit'] VesStreamsApp"


def test_limit_is_harmless_to_call_twice_in_one_process() -> None:
    first = limit_malloc_arenas()
    assert limit_malloc_arenas() == first
