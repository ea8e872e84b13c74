# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``--help`` texts of escd, escctl and escd-sim are complete: they are the manual.

Every command and subcommand has a help line, and every option and argument says what
it does, so ``escctl COMMAND --help`` always answers. A new command without help fails.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from escd.cli import build_parser as escd_parser
from escd.ctl.main import build_parser as escctl_parser
from escd.sim.cli import build_parser as sim_parser


def _walk(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    for action in parser._actions:
        yield name, parser, action
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for sub_name, sub in action.choices.items():
                assert helps.get(sub_name), f"{name} {sub_name} has no help line"
                yield from _walk(sub, f"{name} {sub_name}")


PARSERS = {"escd": escd_parser, "escctl": escctl_parser, "escd-sim": sim_parser}


@pytest.mark.parametrize("program", list(PARSERS))
def test_every_command_option_and_argument_has_help(program: str) -> None:
    parser = PARSERS[program]()
    missing = [
        f"{where}: {action.option_strings or action.dest}"
        for where, _, action in _walk(parser, program)
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and action.help in (None, "")
    ]
    assert missing == []


def test_escctl_lists_every_command_in_its_help() -> None:
    parser = escctl_parser()
    text = parser.format_help()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in commands.choices:
        assert name in text
    assert "diagnose" in commands.choices


def test_escctl_diagnose_help_says_what_it_prints() -> None:
    parser = escctl_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    text = commands.choices["diagnose"].format_help()
    for word in ("--json", "--log", "TOKEN", "never contains a PIN"):
        assert word in text
