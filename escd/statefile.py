# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash-safe state files: atomic writes, and corrupt files set aside instead of trusted.

Owns the one way escd writes anything under ``$XDG_STATE_HOME/escd``: a temporary file
in the same directory, written, flushed and fsynced, then renamed over the target, then
the directory fsynced. A crash, a SIGKILL or a full disk at any point leaves either the
old file or the new one, never a mix; a failed write raises ``StateFileError`` and leaves
the old file in place. A file that does not parse when read is renamed aside
(``<name>.corrupt-<UTC timestamp>``) with a warning and reported as absent, so one bad
file never stops the daemon and is still there for a human to look at.

Rules: this module knows nothing about what the files mean (the token store and the
trust store own their schemas), and it never logs file contents. Calls block (fsync);
an asyncio caller that cares runs them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from escd.errors import StateFileError

logger = logging.getLogger(__name__)

#: State files are small; anything bigger than this is not one of ours.
MAX_STATE_FILE = 1 << 20

_TEMP_SUFFIX = ".tmp"

#: Called with the finished temporary file just before it is renamed over the target.
#: Tests use it to kill a writer at the worst moment; production code passes nothing.
BeforeReplace = Callable[[Path], None]


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) private to the user if it does not exist."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateFileError(str(path), _describe(exc)) from exc
    return path


def write_bytes_atomic(
    path: Path, data: bytes, *, mode: int = 0o600, before_replace: BeforeReplace | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically.

    On failure raises ``StateFileError`` (after logging it) and the old file is untouched.
    """
    directory = path.parent
    ensure_dir(directory)
    try:
        fd, temp_name = tempfile.mkstemp(
            dir=directory, prefix=f".{path.name}.", suffix=_TEMP_SUFFIX
        )
    except OSError as exc:
        logger.warning("cannot write %s: %s", path, _describe(exc))
        raise StateFileError(str(path), _describe(exc)) from exc
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace(temp)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        logger.warning("cannot write %s: %s", path, _describe(exc))
        raise StateFileError(str(path), _describe(exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_dir(directory)


def write_json_atomic(
    path: Path, value: Mapping[str, object], *, before_replace: BeforeReplace | None = None
) -> None:
    """Write ``value`` as JSON to ``path`` atomically (see ``write_bytes_atomic``)."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), before_replace=before_replace)


def read_json(path: Path, *, max_size: int = MAX_STATE_FILE) -> dict[str, object] | None:
    """The JSON object in ``path``; ``None`` if it does not exist or was corrupt (set aside)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_size + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # Unreadable is not the same as corrupt: leave it alone, it may be a permission
        # problem an administrator fixes, and report it as absent for now.
        logger.warning("cannot read %s: %s", path, _describe(exc))
        return None
    if len(data) > max_size:
        set_aside(path, f"larger than {max_size} bytes")
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        set_aside(path, f"not valid JSON ({exc.__class__.__name__})")
        return None
    if not isinstance(value, dict):
        set_aside(path, "not a JSON object")
        return None
    return value


def set_aside(path: Path, reason: str) -> Path | None:
    """Rename a bad file to ``<name>.corrupt-<timestamp>`` and log why; the new path or None."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    try:
        os.replace(path, target)
    except OSError as exc:
        logger.warning(
            "%s is unusable (%s) and could not be set aside: %s", path, reason, _describe(exc)
        )
        return None
    logger.warning("%s is unusable (%s); moved it to %s and started afresh", path, reason, target)
    _fsync_dir(path.parent)
    return target


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temporary files a crashed writer left in ``directory``; how many were removed.

    Call it at start-up only: a writer running at the same time would lose its file.
    """
    removed = 0
    try:
        candidates = list(directory.glob(f".*{_TEMP_SUFFIX}"))
    except OSError:
        return 0
    for candidate in candidates:
        try:
            candidate.unlink()
        except OSError as exc:
            logger.warning("cannot remove stale %s: %s", candidate, _describe(exc))
            continue
        removed += 1
    if removed:
        logger.info("removed %d unfinished state file(s) in %s", removed, directory)
    return removed


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk. Not every file
    # system lets a directory be opened or fsynced; the rename already happened, so a
    # failure here can only lose the newest version on power loss, never corrupt a file.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return exc.__class__.__name__
