# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd-sim lab``: a frontend author's TPS, readers and cards, driven from standard input.

The lab runs as a subprocess; a card inserted by command must be seen by a PC/SC client
(``escd probe``) pointed at the lab's pcscd, removed by command it must be gone, and the
lab must stop cleanly on ``quit``, leaving no pcscd behind.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

from tests.support.escd_process import BIN, ESCD

ESCD_SIM = str(BIN / "escd-sim")
TIMEOUT = 30.0


class Lab:
    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen(
            [ESCD_SIM, "lab", "--dir", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str) -> str:
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            self.seen.append(line)
            if text in line:
                return line

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self._reader.join(TIMEOUT)
        self.proc.stdout.close()

    def say(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()


def probe(socket: str) -> str:
    """``escd probe --json`` against the lab's pcscd: what a PC/SC client sees."""
    result = subprocess.run(
        [ESCD, "probe", "--json"],
        env={**os.environ, "PCSCLITE_CSOCK_NAME": socket},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    json.loads(result.stdout)
    return result.stdout


def wait_until_gone(socket: str, cuid: str) -> None:
    """pcscd notices a pulled vpcd card at its next presence poll: ask until it has."""
    deadline = time.monotonic() + TIMEOUT
    while cuid in probe(socket):
        assert time.monotonic() < deadline, f"card {cuid} is still seen after removal"
        time.sleep(0.2)


def test_lab_inserts_and_removes_cards_seen_by_pcsc_clients(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    try:
        lab.expect("TPS:        https://127.0.0.1:")
        line = lab.expect("export PCSCLITE_CSOCK_NAME=")
        socket = line.split("=", 1)[1].strip()
        lab.say("insert enrolled 1")
        inserted = lab.expect("inserted a new enrolled card")
        cuid = inserted.split("CUID ")[1].split(",")[0]
        assert cuid in probe(socket)
        lab.say("remove 1")
        lab.expect("removed the card")
        wait_until_gone(socket, cuid)
        lab.say("insert 1")
        assert cuid in lab.expect("inserted the same card")
        assert cuid in probe(socket)
        lab.say("quit")
        assert lab.proc.wait(TIMEOUT) == 0
    finally:
        if lab.proc.poll() is None:
            lab.proc.kill()
            lab.proc.wait()
        lab.close()
    assert (tmp_path / "tps" / "ca-cert.pem").is_file()
    assert (tmp_path / "cards" / "slot1.json").is_file()
    pid_file = tmp_path / "pcscd" / "run" / "pcscd.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        assert not Path(f"/proc/{pid}").exists()
