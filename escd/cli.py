# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``escd`` command line: run the daemon, or ``escd probe`` to read cards directly.

Only argument parsing and dispatch live here; the daemon is ``escd.daemon`` and the
probe is ``escd.probe``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from escd import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escd",
        description="Smart-card token daemon for CoolKey tokens and the Dogtag TPS. "
        "Without a command it runs the daemon in the foreground on the session bus.",
        epilog="The daemon reloads its configuration on SIGHUP and stops on SIGTERM. "
        "Exit status: 0 stopped, 1 failed (e.g. lost the bus), 3 another escd owns "
        "io.github.escd.Escd1 on this bus, 69 no session bus, 78 invalid configuration.",
    )
    parser.add_argument("--version", action="version", version=f"escd {__version__}")
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        metavar="FILE",
        help="read this config file instead of /etc/escd/config.yaml and "
        "$XDG_CONFIG_HOME/escd/config.yaml (repeatable; later files win)",
    )
    parser.add_argument(
        "--log-level",
        choices=["error", "warning", "info", "debug", "traffic"],
        help="override the configured log level",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    probe = commands.add_parser(
        "probe",
        help="read every card present directly over PC/SC (no daemon needed)",
        description="Read every card present directly over PC/SC and print what escd "
        "knows about it. Needs no daemon and no bus.",
        epilog="exit status: 0 when pcscd answered (also with no reader or no card; a card "
        "that cannot be read is reported, not an error), 1 when --reader names no reader, "
        "2 when pcscd is not available",
    )
    probe.add_argument("--reader", metavar="NAME", help="only this reader")
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        from escd.probe import run_probe

        return run_probe(reader=args.reader, as_json=args.json)
    from escd.daemon import run_daemon

    return run_daemon(config_files=args.config, log_level=args.log_level)
