# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd-sim lab``: the simulator kept running for frontend authors.

It starts a private pcscd with two vpcd readers and a simulated Dogtag TPS over TLS
(state, CA and cards in one lab directory, so a restart finds the same TPS and cards),
prints how to point a real escd at them, and then reads commands from standard input:
insert a new blank, formatted or enrolled card, re-insert the last one, remove it,
list. Formatted and enrolled cards carry the lab TPS's Phone Home URL; a blank card
gets one when the TPS formats it. Everything stops on ``quit``, end of input, Ctrl-C
or SIGTERM.

It starts processes and threads, never escd itself: the author runs the daemon (and
their frontend) against the lab, as in production. Must not: print a PIN or password
other than the lab's own published demo values.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

LAB_USER = "demo"
LAB_PASSWORD = "demo"  # noqa: S105 - the lab TPS's published demo login
STATES = ("blank", "formatted", "enrolled")
SEEN_TIMEOUT = 5.0
HELP = """commands:
  insert [blank|formatted|enrolled] [SLOT]   a new card (default: formatted, slot 0)
  insert [SLOT]                              the last card of that slot again
  remove [SLOT]                              pull the card (default slot 0)
  cards                                      what is in the readers
  help                                       this text
  quit                                       stop the lab (Ctrl-D and Ctrl-C too)"""


def configure_lab(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Keep a simulated TPS, a private pcscd with two readers and simulated cards "
        "running, and insert or remove cards with commands on standard input, while you "
        "develop a frontend against the real escd."
    )
    parser.add_argument(
        "--dir",
        type=Path,
        help="lab directory for the TPS state, its CA and the cards (default: a new "
        "temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--insert",
        choices=STATES,
        help="insert a new card of this kind into slot 0 right away",
    )
    parser.add_argument(
        "--policy",
        default="PIN_RESET=YES",
        help="the TPS's default token policy (default: PIN_RESET=YES)",
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _lab_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="escd-lab-") as name:
        yield Path(name)


def run_lab(args: argparse.Namespace) -> int:
    from escd.sim.pcscd import PcscdError, PrivatePcscd
    from escd.sim.tps import SimulatedTps
    from escd.sim.tps_config import TokenPolicy, TpsConfig

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _lab_dir(args.dir) as root:
            pcscd = PrivatePcscd(root / "pcscd", reader_name="escd lab")
            try:
                pcscd.start()
            except PcscdError as err:
                print(f"escd-sim lab: {err}", file=sys.stderr)
                return 1
            try:
                config = TpsConfig(default_policy=TokenPolicy.parse(args.policy))
                with SimulatedTps(config, state_dir=root / "tps").in_thread() as tps:
                    lab = _Lab(pcscd, tps.phone_home_url, root / "cards")
                    _introduce(pcscd, tps, root)
                    try:
                        if args.insert:
                            lab.execute(["insert", args.insert])
                        lab.repl()
                    finally:
                        lab.remove_all()
            finally:
                pcscd.stop()
    except KeyboardInterrupt:
        print("\nescd-sim lab: stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _introduce(pcscd: object, tps: object, root: Path) -> None:
    from escd.sim.pcscd import PrivatePcscd
    from escd.sim.tps import SimulatedTps

    assert isinstance(pcscd, PrivatePcscd) and isinstance(tps, SimulatedTps)
    socket = shlex.quote(str(pcscd.socket_path))
    ca = shlex.quote(str(tps.ca_certificate_path))
    print(
        f"""escd-sim lab in {root}
  readers:    {", ".join(repr(name) for name in pcscd.readers)} (private pcscd)
  TPS:        {tps.url}
  phone home: {tps.phone_home_url}
  login:      user {LAB_USER}, password {LAB_PASSWORD}
  CA:         {tps.ca_certificate_path}

Run escd against the lab in another terminal:
  export PCSCLITE_CSOCK_NAME={socket}
  escd &                           # or restart your escd with that variable set
  escctl trust import --yes {ca}
  escctl watch

{HELP}""",
        flush=True,
    )


class _Lab:
    """The cards of the lab, one per vpcd slot, kept in files so they survive removal."""

    def __init__(self, pcscd: object, phone_home_url: str, cards_dir: Path) -> None:
        from escd.sim.pcscd import PrivatePcscd
        from escd.sim.vpcd import VpcdCard

        assert isinstance(pcscd, PrivatePcscd)
        self._pcscd = pcscd
        self._phone_home_url = phone_home_url
        self._cards_dir = cards_dir
        cards_dir.mkdir(parents=True, exist_ok=True)
        self._inserted: dict[int, VpcdCard] = {}

    def repl(self) -> None:
        while True:
            try:
                line = input("lab> ")
            except EOFError:
                print()
                return
            words = line.split()
            if not words:
                continue
            if words[0] in ("quit", "exit"):
                return
            self.execute(words)

    def execute(self, words: list[str]) -> None:
        command, rest = words[0], words[1:]
        try:
            if command == "insert":
                self._insert(rest)
            elif command == "remove":
                self._remove(_slot(rest[0] if rest else "0"))
            elif command == "cards":
                self._list()
            elif command == "help":
                print(HELP)
            else:
                print(f"unknown command {command!r}; try help")
        except ValueError as err:
            print(f"error: {err}")
        sys.stdout.flush()

    def _path(self, slot: int) -> Path:
        return self._cards_dir / f"slot{slot}.json"

    def _insert(self, rest: list[str]) -> None:
        from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
        from escd.sim.vpcd import VpcdCard

        kind: str | None = None
        slot_text = "0"
        for word in rest:
            if word in STATES:
                kind = word
            else:
                slot_text = word
        slot = _slot(slot_text)
        if slot in self._inserted:
            raise ValueError(f"slot {slot} holds a card; remove it first")
        path = self._path(slot)
        if kind is None:
            if not path.exists():
                raise ValueError(f"slot {slot} has no previous card; say which kind to insert")
            card = SimulatedCard.load(path)
            origin = "the same card"
        else:
            url = self._phone_home_url
            state = {
                "blank": lambda: blank_card(),
                "formatted": lambda: formatted_card(phone_home_url=url),
                "enrolled": lambda: enrolled_card(phone_home_url=url, subject="CN=Lab User"),
            }[kind]()
            card = SimulatedCard(state, path=path)
            origin = f"a new {kind} card"
        vpcd = VpcdCard(card, self._pcscd.port_for(slot))
        vpcd.insert()
        self._inserted[slot] = vpcd
        # pcscd polls vpcd for presence; say "inserted" once it has read the ATR.
        if not vpcd.seen.wait(SEEN_TIMEOUT):
            print(f"warning: pcscd has not read the card in {SEEN_TIMEOUT:g} s")
        print(f"inserted {origin}, CUID {card.state.cuid.hex()}, in {self._pcscd.readers[slot]!r}")

    def _remove(self, slot: int) -> None:
        vpcd = self._inserted.pop(slot, None)
        if vpcd is None:
            raise ValueError(f"slot {slot} is empty")
        vpcd.remove()
        print(f"removed the card from {self._pcscd.readers[slot]!r}")

    def _list(self) -> None:
        for slot, reader in enumerate(self._pcscd.readers):
            vpcd = self._inserted.get(slot)
            what = f"CUID {vpcd.card.state.cuid.hex()}" if vpcd is not None else "empty"
            print(f"  [{slot}] {reader}: {what}")

    def remove_all(self) -> None:
        for slot in list(self._inserted):
            self._inserted.pop(slot).remove()


def _slot(text: str) -> int:
    if text not in ("0", "1"):
        raise ValueError(f"a slot is 0 or 1, not {text!r}")
    return int(text)
