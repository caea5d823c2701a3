"""Files written whole or not at all, and file locks: the one copy of each that every writer uses."""

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


def lock(fd: int, block: bool = True, shared: bool = False) -> bool:
    """Take a flock on `fd`: exclusive, or `shared` with other shared holders. Waits for it; without `block` returns
    False at once (keeping `fd` open) when another open file holds a conflicting lock. Taking the other kind on a
    file this one already locks converts the lock. The kernel drops it when the last descriptor of that open file
    closes, however its process ends."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if block else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def try_lock(fd: int, block: bool = False) -> int | None:
    """`fd` holding an exclusive flock, or None (`fd` closed) when another open file holds it; `block` waits for
    it instead."""
    try:
        locked = lock(fd, block)
    except OSError:
        os.close(fd)
        raise
    if locked:
        return fd
    os.close(fd)
    return None


def unlock(fd: int) -> None:
    """Release `fd`'s flock and close it (released even where a forked child still holds a copy of `fd`)."""
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
