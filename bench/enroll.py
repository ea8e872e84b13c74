# SPDX-License-Identifier: GPL-2.0-or-later
"""Benchmark: the cost of relaying an enrollment through escd, and enrollments in parallel.

The simulated Dogtag TPS runs as its own process (``escd-sim tps --plain``), as a real
server would. Two measurements, printed as ratios against the budgets of
docs/architecture.md:

* relay overhead: one enrollment of a freshly formatted simulated card, (a) driven
  directly by escd's ``TpsSession`` and ``TpsConnection`` against the card in this
  process, and (b) through the daemon (in this process, on a private bus, over the
  in-process reader backend), started with ``Token.Enroll`` and answered by an agent on
  another bus connection, until ``Completed`` arrives (the client's unsubscribing after
  it is not counted). Median of ``--iterations`` runs each, interleaved; budget:
  (b) ≤ 1.1 × (a).
* parallel: ``--readers`` tokens (default 32) in as many in-process readers enrolling at
  once through the daemon, from the first call to the last ``Completed``, against one
  enrollment through the daemon; budget ≤ 1.5 ×. Measured twice: with the simulated
  cards at full speed (every card computes its keys in this process, so the CPUs are
  the limit), and with ``--card-delay`` seconds per APDU (default 0.01, a real card's
  pace), where the cards' time runs in parallel as it does with real readers.

Absolute times are context only. Every card is formatted (untimed) before it is
enrolled, so each enrollment does the same work. Prints a report; asserts nothing. Run:
``.venv/bin/python bench/enroll.py [--iterations N] [--readers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dbus_fast import Variant  # noqa: E402

from escd.config import Config  # noqa: E402
from escd.ctl.agent import Answer, PromptRequest, register_agent  # noqa: E402
from escd.ctl.client import EscdClient  # noqa: E402
from escd.daemon import Daemon  # noqa: E402
from escd.dbus_service.names import token_path  # noqa: E402
from escd.log import Secret  # noqa: E402
from escd.model import OperationType  # noqa: E402
from escd.sim.bus import PrivateBus  # noqa: E402
from escd.sim.card import SimulatedCard, blank_card  # noqa: E402
from escd.sim.reader import SimReaderBackend  # noqa: E402
from escd.sim.state import FailureKnobs  # noqa: E402
from escd.tps import codec  # noqa: E402
from escd.tps.connection import TpsConnection  # noqa: E402
from escd.tps.session import (  # noqa: E402
    AskUser,
    Finished,
    ReportProgress,
    ResetCard,
    SendApdu,
    SendMessage,
    SessionResult,
    TpsSession,
)

ESCD_SIM = str(Path(sys.executable).with_name("escd-sim"))
ANSWERS: dict[str, Answer] = {"UID": "demo", "PASSWORD": "demo", "new_pin": "246810"}
RELAY_BUDGET = 1.1
PARALLEL_BUDGET = 1.5
TIMEOUT = 600.0


# -- the TPS process ----------------------------------------------------------------------


def start_tps() -> tuple[subprocess.Popen[str], str, str]:
    """``escd-sim tps`` on a free port: the process, its TPS URL and its base URL."""
    process = subprocess.Popen(
        [ESCD_SIM, "tps", "--plain", "--multiple-tokens-per-user", "--key-size", "1024"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    words = process.stdout.readline().split()
    if len(words) < 2 or words[0] != "TPS":
        process.kill()
        raise SystemExit("escd-sim tps did not start")
    url = words[1]
    return process, url, url.split("/tps/", 1)[0]


# -- (a) the same exchange without the daemon -----------------------------------------------


async def relay(url: str, card: SimulatedCard, operation: OperationType) -> SessionResult:
    """One operation: escd's session and connection, the card answering directly."""
    session = TpsSession(operation, atr=card.atr, version="bench")
    connection = TpsConnection(url, version="bench", allow_http=[url.split("/tps/", 1)[0]])
    pending = deque(session.start())
    opened = False
    try:
        while True:
            while pending:
                action = pending.popleft()
                if isinstance(action, SendMessage):
                    if opened:
                        await connection.send_message(action.message)
                    else:
                        opened = True
                        await connection.open(codec.encode(action.message))
                elif isinstance(action, SendApdu):
                    pending.extend(session.card_responded(card.transmit(action.apdu)))
                elif isinstance(action, AskUser):
                    values: dict[str, Secret | str] = {
                        f.id: Secret(str(ANSWERS[f.id])) if f.is_secret else str(ANSWERS[f.id])
                        for f in action.prompt.fields
                    }
                    pending.extend(session.user_answered(values))
                elif isinstance(action, ResetCard):
                    card.reset()
                elif isinstance(action, ReportProgress):
                    pass
                elif isinstance(action, Finished):
                    if action.result.end_op is not None:
                        await connection.finish()
                    return action.result
            pending.extend(session.receive(await connection.receive()))
    finally:
        await connection.aclose()


async def direct_enrollment(url: str) -> float:
    card = SimulatedCard(blank_card())
    card.power_on()
    result = await relay(url, card, OperationType.FORMAT)
    assert result.succeeded, result.error
    started = time.perf_counter()
    result = await relay(url, card, OperationType.ENROLL)
    elapsed = time.perf_counter() - started
    assert result.succeeded, result.error
    return elapsed


# -- (b) through the daemon -----------------------------------------------------------------


class BenchAgent:
    async def answer(self, request: PromptRequest) -> dict[str, Answer]:
        return {f.id: ANSWERS.get(f.id, True) for f in request.fields}

    def withdrawn(self, request: PromptRequest) -> None:
        pass

    def released(self) -> None:
        pass


class ThroughDaemon:
    """An embedded daemon over in-process readers, and a client with an agent."""

    def __init__(self, daemon: Daemon, readers: SimReaderBackend, client: EscdClient) -> None:
        self.daemon = daemon
        self.readers = readers
        self.client = client
        self._tokens = 0
        #: Seconds each simulated card takes per APDU (0: as fast as the simulator).
        self.card_delay = 0.0

    async def insert(self, reader: int) -> str:
        card = SimulatedCard(blank_card(), knobs=FailureKnobs(apdu_delay=self.card_delay))
        cuid = card.state.cuid.hex()
        appeared = asyncio.Event()

        def seen(_event: object) -> None:
            try:
                self.daemon.registry.token(cuid)
            except Exception:
                return
            appeared.set()

        unsubscribe = self.daemon.registry.subscribe(seen)
        try:
            self.readers.insert(self.readers.readers[reader], card)
            async with asyncio.timeout(TIMEOUT):
                await appeared.wait()
        finally:
            unsubscribe()
        return token_path(cuid)

    def remove(self, reader: int) -> None:
        self.readers.remove(self.readers.readers[reader])

    async def run(self, token: str, method: str, **options: Variant) -> float:
        """Start ``method`` and wait for ``Completed``; when it arrived (``perf_counter``).

        The job has ended when ``Completed`` arrives: the client's unsubscribing
        afterwards (two ``RemoveMatch`` calls) is not part of the operation's time.
        """
        self._tokens += 1
        handle = f"bench_{self._tokens}"
        completed: float | None = None
        async with self.client.watch_job(self.client.job_path(handle)) as watch:
            await self.client.start_operation(
                token, method, {"handle_token": Variant("s", handle), **options}
            )
            async for view in watch.updates():
                if view.completed:
                    completed = time.perf_counter()
                    if view.result.get("error"):
                        raise SystemExit(f"{method} failed: {view.result}")
                    break
        if completed is None:
            raise SystemExit("no Completed")
        return completed

    async def formatted(self, reader: int) -> str:
        token = await self.insert(reader)
        await self.run(token, "Format", confirmed=Variant("b", True))
        return token

    async def enrollment(self) -> float:
        """One enrollment of a formatted card, from the call to ``Completed``."""
        token = await self.formatted(0)
        started = time.perf_counter()
        elapsed = await self.run(token, "Enroll") - started
        self.remove(0)
        return elapsed

    async def reread(self) -> float:
        """The median time escd takes to read an enrolled card again (``Refresh``)."""
        token = await self.formatted(0)
        await self.run(token, "Enroll")
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await self.client.call(token, "io.github.escd.Escd1.Token", "Refresh")
            times.append(time.perf_counter() - started)
        self.remove(0)
        return statistics.median(times)

    async def parallel(self, count: int) -> float:
        tokens = await asyncio.gather(*(self.formatted(n) for n in range(count)))
        started = time.perf_counter()
        elapsed = max(await asyncio.gather(*(self.run(token, "Enroll") for token in tokens)))
        elapsed -= started
        for n in range(count):
            self.remove(n)
        return elapsed


def report_parallel(count: int, wall: float, one: float, what: str) -> None:
    ratio = wall / one
    verdict = "within" if ratio <= PARALLEL_BUDGET else "OVER"
    print(f"{count} tokens enrolling at once through escd, {what}:")
    print(f"  one enrollment {one * 1000:8.1f} ms; all {count} {wall * 1000:8.1f} ms")
    print(f"  ratio {ratio:.2f}x one enrollment (budget {PARALLEL_BUDGET}x: {verdict})")


async def measure(args: argparse.Namespace, url: str, base: str) -> None:
    loop = asyncio.get_running_loop()
    readers = SimReaderBackend(loop, max(args.readers, 1))
    config = Config.from_mapping(
        {
            "tps": {"url": url, "allow_http": [base]},
            "phone_home": {"enabled": False},
            "log": {"level": "warning"},
        }
    )
    state = Path(os.environ.get("TMPDIR", "/tmp")) / f"escd-bench-{os.getpid()}"
    daemon = Daemon(config, backend=readers, state=state)
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(30):
        await daemon.ready.wait()
    client = await EscdClient.connect()
    await register_agent(client.bus, BenchAgent())
    through = ThroughDaemon(daemon, readers, client)
    try:
        direct: list[float] = []
        relayed: list[float] = []
        await direct_enrollment(url)  # warm-up: imports, first TLS-free connections
        await through.enrollment()
        for _ in range(args.iterations):
            direct.append(await direct_enrollment(url))
            relayed.append(await through.enrollment())
        one = statistics.median(relayed)
        base_time = statistics.median(direct)
        ratio = one / base_time
        print(f"one enrollment, median of {args.iterations}:")
        print(f"  direct (TpsSession + card, no daemon)  {base_time * 1000:8.1f} ms")
        print(f"  through escd (D-Bus, agent, worker)    {one * 1000:8.1f} ms")
        verdict = "within" if ratio <= RELAY_BUDGET else "OVER"
        print(f"  relay overhead ratio {ratio:.2f}x (budget {RELAY_BUDGET}x: {verdict})")
        reread = await through.reread()
        print(f"  of the difference, re-reading the card before Completed: {reread * 1000:.1f} ms")
        if args.readers > 1:
            wall = await through.parallel(args.readers)
            report_parallel(args.readers, wall, one, "simulated cards at full speed")
            through.card_delay = args.card_delay
            slow_one = statistics.median([await through.enrollment() for _ in range(3)])
            wall = await through.parallel(args.readers)
            report_parallel(
                args.readers, wall, slow_one, f"cards taking {args.card_delay * 1000:g} ms per APDU"
            )
            print(
                f"  ({os.cpu_count()} CPUs; the TPS is another process; the simulated cards "
                "compute their keys in this one)"
            )
    finally:
        client.close()
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=15, help="enrollments per variant")
    parser.add_argument("--readers", type=int, default=32, help="tokens enrolling at once")
    parser.add_argument(
        "--card-delay",
        type=float,
        default=0.01,
        metavar="SECONDS",
        help="per-APDU time of the cards in the second parallel run",
    )
    args = parser.parse_args()
    with PrivateBus() as bus:
        os.environ.update(bus.env)
        tps, url, base = start_tps()
        try:
            asyncio.run(measure(args, url, base))
        finally:
            tps.terminate()
            tps.wait(30)


if __name__ == "__main__":
    main()
