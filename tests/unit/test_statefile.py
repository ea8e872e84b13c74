# SPDX-License-Identifier: GPL-2.0-or-later
"""Atomic state files: a killed writer or a full disk never costs the previous version."""

from __future__ import annotations

import json
import logging
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from escd.errors import StateFileError
from escd.statefile import (
    ensure_dir,
    read_json,
    remove_stale_temp_files,
    set_aside,
    write_bytes_atomic,
    write_json_atomic,
)


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


def test_written_json_reads_back_private_and_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "state" / "token.json"
    write_json_atomic(target, {"a": 1, "b": ["x", "ü"]})
    assert read_json(target) == {"a": 1, "b": ["x", "ü"]}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert _temp_files(target.parent) == []


def test_a_write_replaces_the_previous_version(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_json_atomic(target, {"version": 1})
    write_json_atomic(target, {"version": 2})
    assert read_json(target) == {"version": 2}


CRASHING_WRITER = """
    import os, signal, sys
    from pathlib import Path
    from escd.statefile import write_json_atomic

    def die(temp: Path) -> None:
        # The new content is complete and fsynced in the temporary file; the rename
        # has not happened. This is the worst moment to lose the process.
        print(temp, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    write_json_atomic(Path(sys.argv[1]), {"version": "new"}, before_replace=die)
"""


def test_writer_killed_before_rename_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    write_json_atomic(target, {"version": "old"})

    child = _run_child(CRASHING_WRITER, str(target))

    assert child.returncode == -signal.SIGKILL, child.stderr
    temp = Path(child.stdout.strip())
    assert json.loads(temp.read_text()) == {"version": "new"}  # the half-done write exists…
    assert read_json(target) == {"version": "old"}  # …and changed nothing
    assert remove_stale_temp_files(tmp_path) == 1
    assert _temp_files(tmp_path) == []
    assert read_json(target) == {"version": "old"}


def test_writer_killed_before_the_first_rename_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    child = _run_child(CRASHING_WRITER, str(target))
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()
    assert read_json(target) is None


FULL_DISK_WRITER = """
    import json, resource, signal, sys
    from pathlib import Path
    from escd.errors import StateFileError
    from escd.statefile import write_json_atomic

    # A file-size limit makes write() fail with EFBIG like a full disk fails with
    # ENOSPC, without needing a small file system (and it works as root).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        write_json_atomic(Path(sys.argv[1]), {"big": "x" * 100000})
    except StateFileError as exc:
        print(json.dumps({"error": exc.__class__.__name__, "reason": exc.reason}))
    else:
        print(json.dumps({"error": None}))
"""


def test_a_failed_write_raises_a_named_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    write_json_atomic(target, {"version": "old"})

    child = _run_child(FULL_DISK_WRITER, str(target))

    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["error"] == "StateFileError"
    assert result["reason"] == "File too large"
    assert "cannot write" in child.stderr  # logged by the writer, not only raised
    assert read_json(target) == {"version": "old"}
    assert _temp_files(tmp_path) == []


def test_an_interrupted_write_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    write_json_atomic(target, {"version": "old"})

    class Interrupted(BaseException):
        pass

    def interrupt(temp: Path) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        write_json_atomic(target, {"version": "new"}, before_replace=interrupt)
    assert read_json(target) == {"version": "old"}
    assert _temp_files(tmp_path) == []


def test_a_write_into_an_impossible_directory_is_a_state_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StateFileError) as caught:
        write_bytes_atomic(blocker / "x.json", b"{}")
    assert str(blocker) in caught.value.path


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"a": ', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"a": "\xff"}', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_a_corrupt_file_is_set_aside_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, why: str
) -> None:
    target = tmp_path / "token.json"
    target.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="escd.statefile"):
        assert read_json(target) is None
    assert not target.exists()
    aside = list(tmp_path.glob("token.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert why in caplog.text and "moved it to" in caplog.text


def test_an_oversized_file_is_set_aside(tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    target.write_text(json.dumps({"pad": "x" * 2000}))
    assert read_json(target, max_size=1000) is None
    assert len(list(tmp_path.glob("token.json.corrupt-*"))) == 1


def test_setting_aside_twice_keeps_both_copies(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("one")
    first = set_aside(target, "test")
    target.write_text("two")
    second = set_aside(target, "test")
    assert first is not None and second is not None and first != second
    assert {first.read_text(), second.read_text()} == {"one", "two"}


def test_a_missing_file_reads_as_none_and_sets_nothing_aside(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json") is None
    assert list(tmp_path.iterdir()) == []


def test_ensure_dir_creates_private_parents(tmp_path: Path) -> None:
    made = ensure_dir(tmp_path / "a" / "b")
    assert made.is_dir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
