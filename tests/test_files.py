"""The one lock helper: exclusive and shared flocks, probed or waited for, on separate open files (flock's unit)."""

import os

import pytest

from ctxenergy.files import lock, try_lock, unlock


def open_lock_file(path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_shared_locks_coexist_and_keep_an_exclusive_probe_out_without_closing_it(tmp_path):
    path = tmp_path / "run.lock"
    first, second, probe = open_lock_file(path), open_lock_file(path), open_lock_file(path)
    try:
        assert lock(first, shared=True) and lock(second, block=False, shared=True)
        assert not lock(probe, block=False) and is_open(probe)  # a probe that failed keeps its file
        unlock(first)
        assert not lock(probe, block=False)
        unlock(second)
        assert lock(probe, block=False)  # the last shared holder gone: the exclusive probe succeeds
        assert lock(probe, shared=True)  # converted in place, so others may share it again
        other = open_lock_file(path)
        assert lock(other, block=False, shared=True)
        unlock(other)
    finally:
        os.close(probe)


def test_try_lock_closes_a_file_another_holds_and_returns_one_it_locked(tmp_path):
    path = tmp_path / "gpu.lock"
    held = try_lock(open_lock_file(path))
    assert held is not None
    refused = open_lock_file(path)
    assert try_lock(refused) is None and not is_open(refused)
    unlock(held)
    again = try_lock(open_lock_file(path), block=True)
    assert again is not None
    unlock(again)


def test_a_lock_error_other_than_held_is_raised(tmp_path):
    fd = open_lock_file(tmp_path / "x.lock")
    os.close(fd)
    with pytest.raises(OSError):
        lock(fd, block=False)
