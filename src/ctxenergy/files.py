"""Files written whole or not at all, and exclusive file locks: the one copy of each that every writer uses."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_beside(path: str | Path) -> str:
    """An empty temporary file in `path`'s folder (made if missing), to be moved onto `path` by `commit`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def commit(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file onto `path` in one step (same file system: readers see old or new)."""
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
    os.replace(tmp, path)


@contextmanager
def replacing(path: str | Path) -> Iterator[str]:
    """A temporary file beside `path` that replaces it once written: readers never see a half-written `path`, and
    a failure leaves no temporary behind."""
    tmp = temp_beside(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(text: str, path: str | Path) -> Path:
    """A text file (a page, a settings snapshot, a JSON record) written atomically, UTF-8."""
    path = Path(path)
    with replacing(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def try_lock(fd: int, block: bool = False) -> int | None:
    """`fd` holding an exclusive flock, or None (`fd` closed) when another open file holds it; `block` waits for
    it instead. The kernel drops the lock when the last descriptor of that open file closes, however its process
    ends."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd
