"""twin-ring-worker (roles/prima_cpp/files) ties a prima.cpp worker rank to rank 0's life.

The script runs for real here; rank 0 is a TCP listener on a free port (the
script only probes rank 0's data port) and the worker a shell command whose
process id it writes, so each case is seconds long. The same script runs
around the real prima.cpp worker in tests/jobs/test_expert_ring.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ports import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "roles" / "prima_cpp" / "files" / "twin-ring-worker"
INTERVAL = 0.2
MISSES = 3


class Rank0:
    """A listener standing where rank 0's data port is."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self.sock = sock

    def down(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture
def rank0() -> Iterator[Rank0]:
    listener = Rank0()
    yield listener
    listener.down()


def supervise(rank0: Rank0, tmp_path: Path, worker: str) -> subprocess.Popen[str]:
    """twin-ring-worker around ``sh -c worker``; the worker writes its pid to tmp_path/pid."""
    command = f"echo $$ > {tmp_path / 'pid'}; {worker}"
    return subprocess.Popen(
        [
            *(str(SCRIPT), "--watch", f"127.0.0.1:{rank0.port}", "--interval", str(INTERVAL)),
            *("--misses", str(MISSES), "--", "sh", "-c", command),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def worker_pid(tmp_path: Path) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = (tmp_path / "pid").read_text() if (tmp_path / "pid").exists() else ""
        if text.strip():
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the worker never started")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has ended; only its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_rank0_gone_stops_the_worker_and_exits_75_within_the_bound(rank0, tmp_path):
    rank0.up()
    proc = supervise(rank0, tmp_path, "exec sleep 300")
    pid = worker_pid(tmp_path)
    time.sleep(INTERVAL * 3)
    assert proc.poll() is None
    rank0.down()
    gone = time.monotonic()
    code = proc.wait(timeout=10)
    took = time.monotonic() - gone
    out = proc.stdout.read() if proc.stdout else ""
    assert code == 75, out
    assert took < (MISSES + 2) * INTERVAL * 2 + 1, took
    assert not alive(pid)
    assert f"rank 0 at 127.0.0.1:{rank0.port} is gone" in out


def test_rank0_not_up_yet_is_waited_for_not_counted(rank0, tmp_path):
    proc = supervise(rank0, tmp_path, "exec sleep 300")
    worker_pid(tmp_path)
    # Never seen up: rank 0 is starting, not gone.
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=INTERVAL * MISSES * 2 + 2)
    rank0.up()
    time.sleep(INTERVAL * 3)
    rank0.down()
    assert proc.wait(timeout=10) == 75


def test_a_failing_worker_passes_its_status_on(rank0, tmp_path):
    rank0.up()
    proc = supervise(rank0, tmp_path, "sleep 0.3; exit 3")
    assert proc.wait(timeout=10) == 3


def test_a_worker_prima_leaves_out_waits_idle_until_rank0_goes(rank0, tmp_path):
    rank0.up()
    proc = supervise(rank0, tmp_path, "echo 'No layer is assigned to me, exit'; exit 0")
    # Parked, not ended: Nomad would restart it in a loop.
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=INTERVAL * MISSES * 2 + 2)
    rank0.down()
    assert proc.wait(timeout=10) == 75
    assert "left the ring (status 0)" in (proc.stdout.read() if proc.stdout else "")


def test_nomads_kill_signal_stops_the_worker_with_it(rank0, tmp_path):
    rank0.up()
    proc = supervise(rank0, tmp_path, "exec sleep 300")
    pid = worker_pid(tmp_path)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=15)
    assert code == 128 + signal.SIGTERM  # the worker's status: ended by SIGTERM
    assert not alive(pid)
