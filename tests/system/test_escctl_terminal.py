# SPDX-License-Identifier: GPL-2.0-or-later
"""escctl's prompts at a real terminal: what a person sees and types, through the whole chain.

``escctl`` runs on a pseudo-terminal that is its controlling terminal
(``tests.support.terminal``), against the chain of ``test_enrollment_e2e`` (its fixtures,
for a module of its own: a daemon at the traffic log level, the simulated TPS over TLS,
a blank card in a vpcd slot of the private pcscd). The tests type at the prompts after
they appear and check what the terminal shows: the user id echoed, the password and
every PIN not; a format declined with ``n`` and confirmed with ``y``; Ctrl+C at the
password prompt; a PIN of the wrong length refused before escctl answers and two
different PINs asked again; then the PIN that was set opens the token in OpenSC. They
build on each other in file order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from escd.ctl.console import EXIT_CANCELED, EXIT_OK
from escd.sim.pcscd import PrivatePcscd
from escd.sim.vpcd import VpcdCard
from tests.support.escd_process import ESCCTL, EscdProcess
from tests.support.terminal import Terminal
from tests.system import test_enrollment_e2e as e2e
from tests.system.test_middleware_cross_check import MODULES, pkcs11_tool

# The chain, one per module (fixtures are found by name in this module).
tps = e2e.tps
home = e2e.home
env = e2e.env
card = e2e.card
daemon = e2e.daemon
cuid, info, USER, PASSWORD = e2e.cuid, e2e.info, e2e.USER, e2e.PASSWORD

TIMEOUT = 15.0
PIN = "tT5-pin9"
#: Refused by escctl itself: the simulated TPS asks for 4 to 10 characters.
SHORT_PIN, LONG_PIN = "zq9", "Lq8-far-too-long"
#: A confirmation that differs from the PIN typed first.
OTHER_PIN = "Mx2-other"
TYPED_SECRETS = (PASSWORD, PIN, SHORT_PIN, LONG_PIN, OTHER_PIN)
NEW_PIN_PROMPT = "New PIN (4-10 characters): "


def run(env: dict[str, str], *args: str) -> Terminal:
    return Terminal([ESCCTL, *args], env, timeout=TIMEOUT)


def test_format_n_cancels_and_y_formats(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard
) -> None:
    token = cuid(card)
    before = card.card.state.to_json()
    login = ("--user", USER, "--password-file", str(home / "password"))
    with run(env, "format", token, *login) as terminal:
        terminal.expect("Format this token? [y/N] ")
        terminal.send("n\r")
        assert terminal.wait() == EXIT_CANCELED, terminal.text
    # The question stays until answered (no progress redraw over it); the answer is echoed.
    assert "Format this token? [y/N] n\r\n" in terminal.text
    assert f"format of token {token} canceled" in terminal.text
    assert "failed" not in terminal.text  # a "no" is the user's choice, not a failure
    assert card.card.state.to_json() == before
    assert info(env, token)["state"] == "no-applet"

    with run(env, "format", token, *login) as terminal:
        terminal.expect("Format this token? [y/N] ")
        terminal.send("y\r")
        assert terminal.wait() == EXIT_OK, terminal.text
    assert f"format of token {token} succeeded" in terminal.text
    assert info(env, token)["state"] == "uninitialized"


def test_ctrl_c_at_the_password_prompt_cancels_the_enrollment(
    daemon: EscdProcess, env: dict[str, str], card: VpcdCard
) -> None:
    token = cuid(card)
    before = card.card.state.to_json()
    mark = daemon.mark()
    with run(env, "enroll", token) as terminal:
        terminal.expect("User ID: ")
        assert terminal.echo
        terminal.send(USER + "\r")
        terminal.expect("Password: ")
        assert not terminal.echo  # already off when the prompt shows
        terminal.send("\x03")
        assert terminal.wait() == EXIT_CANCELED, terminal.text
        assert terminal.echo, "escctl left the terminal without echo"
    # The interrupted question's line is ended before escctl speaks.
    assert "Password: \r\nescctl: canceling the enroll..." in terminal.text
    daemon.wait_for(rf"enroll of token {token} canceled: ", TIMEOUT, start=mark)
    assert daemon.alive
    last = asyncio.run(e2e._last_operation(token))
    assert last["operation"] == "enroll"
    assert last["error"] == "io.github.escd.Escd1.Error.Canceled"
    assert card.card.state.to_json() == before
    assert info(env, token)["state"] == "uninitialized"


def test_enroll_typed_at_the_terminal_sets_the_pin_typed(
    daemon: EscdProcess, env: dict[str, str], card: VpcdCard, pcscd: PrivatePcscd
) -> None:
    token = cuid(card)
    with run(env, "enroll", token) as terminal:
        terminal.expect("User ID: ")
        terminal.send(USER + "\r")
        terminal.expect("Password: ")
        assert not terminal.echo
        terminal.send(PASSWORD + "\r")
        # Wrong lengths are refused before escctl answers: no confirmation is asked.
        for wrong in (SHORT_PIN, LONG_PIN):
            terminal.expect(NEW_PIN_PROMPT)
            assert not terminal.echo
            terminal.send(wrong + "\r")
            shown = terminal.expect("The new PIN must have 4 to 10 characters.")
            assert "again" not in shown, shown
        terminal.expect(NEW_PIN_PROMPT)
        terminal.send(PIN + "\r")
        terminal.expect("New PIN again: ")
        assert not terminal.echo
        terminal.send(OTHER_PIN + "\r")
        terminal.expect("The two PINs differ; try again.")
        terminal.expect(NEW_PIN_PROMPT)
        terminal.send(PIN + "\r")
        terminal.expect("New PIN again: ")
        terminal.send(PIN + "\r")
        assert terminal.wait() == EXIT_OK, terminal.text
        assert terminal.echo
    text = terminal.text
    assert f"User ID: {USER}\r\n" in text  # echoed as typed
    # Each question stays on its line until answered (no progress redraw over it).
    assert "Password: \r\n" in text
    assert text.count(NEW_PIN_PROMPT) == text.count(NEW_PIN_PROMPT + "\r\n") == 4, text
    assert text.count("New PIN again: ") == text.count("New PIN again: \r\n") == 2, text
    for secret in TYPED_SECRETS:
        assert secret not in text, f"{secret!r} was shown:\n{text}"
    assert "PROGRESS_KEY_GENERATION" in text
    assert f"enroll of token {token} succeeded" in text
    assert info(env, token)["state"] == "enrolled"
    logged_in = pkcs11_tool(pcscd, MODULES["opensc"](), "-O", "--login", "--pin", PIN)
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Private Key Object; RSA" in logged_in.stdout


def test_the_traffic_log_has_no_secret_typed(daemon: EscdProcess) -> None:
    text = daemon.output()
    assert "TRAFFIC" in text and "NEW_PIN_REQUEST" in text.upper()
    for secret in TYPED_SECRETS:
        assert secret not in text, secret
