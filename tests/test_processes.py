"""What the kernel says about a process: its start time names it across pid reuse, a zombie is gone, and a command
name holding ") " does not shift the fields read after it."""

import shutil
import subprocess
import time

from ctxenergy import processes


def test_a_process_is_alive_until_it_ends_and_its_start_time_tells_a_reused_pid(tmp_path):
    odd_name = tmp_path / "a) b c"  # /proc/<pid>/stat names the command before its fields: "(a) b c) S ..."
    odd_name.symlink_to(shutil.which("sleep"))
    sleeper = subprocess.Popen([str(odd_name), "300"])
    try:
        started = processes.start_time(sleeper.pid)
        assert started and started.isdigit() and started == processes.start_time(sleeper.pid)
        assert processes.alive(sleeper.pid) and processes.alive(sleeper.pid, started)
        assert not processes.alive(sleeper.pid, "1")  # same pid, another start: another process
        assert sleeper.pid in processes.own_process_tree()
    finally:
        sleeper.kill()
    time.sleep(0.2)
    assert not processes.alive(sleeper.pid)  # a zombie (not yet reaped) is gone too
    sleeper.wait()
    assert not processes.alive(sleeper.pid) and processes.start_time(sleeper.pid) is None
    assert sleeper.pid not in processes.own_process_tree()
