# SPDX-License-Identifier: GPL-2.0-or-later
"""``escd-sim``: run the simulator's pieces from the command line.

A dispatcher only: each subcommand is a ``Subcommand`` (its name, help, a function that
adds its arguments, a function that runs it) in ``SUBCOMMANDS``. To add one (``tps``,
``lab``, ``demo``), write its two functions in its own module, keep heavy imports inside
the run function, and append an entry here.

``escd-sim card`` plugs one simulated CoolKey card into a vpcd slot of a running pcscd
and keeps it there until Ctrl-C or SIGTERM, which pull it cleanly. With ``--file`` the
card is loaded from that file when it exists (else created there) and every change a
client makes is saved to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from escd import __version__
from escd.log import TRAFFIC
from escd.sim.demo import configure_demo, run_demo
from escd.sim.lab import configure_lab, run_lab
from escd.sim.tps_cli import configure_tps, run_tps

DEFAULT_VPCD_PORT = 35963
LOG_LEVELS = {
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "traffic": TRAFFIC,
}


@dataclass(frozen=True, slots=True)
class Subcommand:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- escd-sim card ----------------------------------------------------------------------


def _cuid(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.replace(" ", "").replace(":", ""))
    except ValueError as err:
        raise argparse.ArgumentTypeError("a CUID is 20 hex digits") from err
    if len(value) != 10:
        raise argparse.ArgumentTypeError("a CUID is 20 hex digits (10 bytes)")
    return value


def _default_port() -> int:
    # ``ci-setup.sh up`` exports the port of the pcscd it started.
    try:
        return int(os.environ.get("ESCD_VPCD_PORT", DEFAULT_VPCD_PORT))
    except ValueError:
        return DEFAULT_VPCD_PORT


def configure_card(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        choices=["blank", "formatted", "enrolled"],
        default="formatted",
        help="what is on the card when it is created (default: formatted)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_default_port(),
        help="vpcd base port (default: $ESCD_VPCD_PORT or 35963, Debian's vpcd entry)",
    )
    parser.add_argument("--slot", type=int, choices=[0, 1], default=0, help="vpcd slot")
    parser.add_argument(
        "--file", type=Path, help="load the card from this file if it exists, else create it; "
        "changes are saved to it"
    )  # fmt: skip
    parser.add_argument("--cuid", type=_cuid, help="the card's CUID, 20 hex digits")
    parser.add_argument("--phone-home-url", help="issuer info of a formatted/enrolled card")
    parser.add_argument(
        "--subject", default="CN=Test User", help="certificate subject of an enrolled card"
    )
    parser.add_argument("--pin", default="1234", help="PIN of an enrolled card")
    parser.add_argument(
        "--scp", type=int, choices=[1, 2], default=1, help="secure channel protocol (SCP01/02)"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to wait before each answer"
    )


def run_card(args: argparse.Namespace) -> int:
    from escd.sim.card import SimulatedCard, blank_card, enrolled_card, formatted_card
    from escd.sim.scp import ScpProtocol
    from escd.sim.state import CardState, FailureKnobs
    from escd.sim.vpcd import VpcdCard

    protocol = ScpProtocol(args.scp)
    knobs = FailureKnobs(apdu_delay=args.delay)

    def create() -> CardState:
        if args.state == "blank":
            return blank_card(cuid=args.cuid, protocol=protocol)
        if args.state == "formatted":
            return formatted_card(
                cuid=args.cuid, protocol=protocol, phone_home_url=args.phone_home_url
            )
        return enrolled_card(
            cuid=args.cuid,
            protocol=protocol,
            phone_home_url=args.phone_home_url,
            subject=args.subject,
            pin=args.pin,
        )

    try:
        if args.file is not None and args.file.exists():
            card = SimulatedCard.load(args.file, knobs=knobs)
            origin = f"loaded from {args.file}"
        else:
            card = SimulatedCard(create(), path=args.file, knobs=knobs)
            origin = f"new {args.state} card" + (f", saved to {args.file}" if args.file else "")
    except ValueError as err:
        print(f"escd-sim card: {err}", file=sys.stderr)
        return 2
    port = args.port + args.slot
    vpcd = VpcdCard(card, port)
    try:
        vpcd.insert()
    except OSError as err:
        print(
            f"escd-sim card: cannot reach vpcd on port {port} ({err.strerror or err}); "
            "is pcscd running with vsmartcard-vpcd?",
            file=sys.stderr,
        )
        return 1
    print(
        f"{origin}: CUID {card.state.cuid.hex()} in vpcd port {port}; Ctrl-C removes it",
        flush=True,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Blocks until pcscd drops the connection; Ctrl-C and SIGTERM interrupt it.
        vpcd.disconnected.wait()
        print("escd-sim card: vpcd closed the connection", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        vpcd.remove()
        print("card removed", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "card",
        "plug a simulated CoolKey card into vpcd until interrupted",
        configure_card,
        run_card,
    ),
    Subcommand("tps", "run a simulated Dogtag TPS until interrupted", configure_tps, run_tps),
    Subcommand(
        "lab",
        "keep a TPS, a private pcscd and cards running; insert and remove cards by command",
        configure_lab,
        run_lab,
    ),
    Subcommand(
        "demo",
        "the whole chain end to end: phone home, format, enroll, PIN reset (under a minute)",
        configure_demo,
        run_demo,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escd-sim",
        description="The escd simulator: CoolKey cards in a real pcscd (vpcd) and more.",
    )
    parser.add_argument("--version", action="version", version=f"escd-sim {__version__}")
    parser.add_argument(
        "--log-level", choices=list(LOG_LEVELS), default="warning", help="log verbosity"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for subcommand in SUBCOMMANDS:
        sub = commands.add_parser(subcommand.name, help=subcommand.help)
        subcommand.configure(sub)
        sub.set_defaults(run=subcommand.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=LOG_LEVELS[args.log_level], format="%(name)s: %(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
