"""The exactly-once local store after an exit: kept when it was clean, wiped when it was not."""

from __future__ import annotations

from pathlib import Path

from ves_streams.runtime.clean_exit import CLEAN_EXIT, mark_clean_exit, wipe_after_unclean_exit


def _tables(tabledir: Path) -> Path:
    db = tabledir / "app-samples-state-0.db"
    db.mkdir(parents=True)
    (db / "000001.log").write_bytes(b"marker ahead of its changelog")
    return db


def test_tables_left_by_an_unclean_exit_are_removed(tmp_path: Path) -> None:
    db = _tables(tmp_path)
    assert wipe_after_unclean_exit(tmp_path) is True
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_tables_closed_cleanly_are_kept_and_the_next_exit_must_say_so_again(tmp_path: Path) -> None:
    db = _tables(tmp_path)
    mark_clean_exit(tmp_path)
    assert wipe_after_unclean_exit(tmp_path) is False
    assert (db / "000001.log").exists()
    assert not (tmp_path / CLEAN_EXIT).exists()  # this run has not exited yet
    assert wipe_after_unclean_exit(tmp_path) is True  # ... and if it is killed, the next start wipes


def test_a_first_start_has_nothing_to_wipe(tmp_path: Path) -> None:
    assert wipe_after_unclean_exit(tmp_path / "tables") is False
    assert wipe_after_unclean_exit(tmp_path) is False
