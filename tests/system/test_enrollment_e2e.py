# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole chain: escctl → escd (a process) → the simulated TPS over TLS, pcscd + vpcd → card.

One daemon serves the module, at ``--log-level traffic`` so that the last test can grep
everything it logged for the secrets used. The simulated Dogtag TPS runs on a thread
over TLS; its CA is imported into the daemon's trust store before the daemon starts (no
other trust is configured for it). ``escctl`` runs as a subprocess with ``--user``,
``--password-file`` and ``--pin-file`` (once with the new PIN typed at its prompt), and
OpenSC and CoolKey check the result through the same pcscd. The tests build on each
other in file order: format, a refused login, enroll, PIN reset.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from escd.ctl.client import EscdClient
from escd.dbus_service.names import PROPERTIES_INTERFACE, TOKEN_INTERFACE, token_path
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, blank_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import Faults, TokenPolicy, TpsConfig
from escd.sim.tps_db import User, UserDirectory
from escd.sim.vpcd import VpcdCard
from escd.trust import TrustStore
from tests.support.escd_process import ESCCTL, EscdProcess, environment, process_alive
from tests.system.test_middleware_cross_check import MODULES, pkcs11_tool

TIMEOUT = 10.0
USER, PASSWORD, WRONG_PASSWORD = "jdoe", "s3cret-Pa55w0rd", "not-the-Pa55w0rd"
PIN, NEW_PIN = "qK7-pin4", "nW3-pin8"
SECRETS = (PASSWORD, WRONG_PASSWORD, PIN, NEW_PIN)
#: CoolKey GENERATE KEY.
INS_GENERATE_KEY = 0x0C


class PullOnKeygen(SimulatedCard):
    """A card that is pulled out of its vpcd slot when GENERATE KEY arrives (once armed)."""

    vpcd: VpcdCard | None = None
    armed = False

    def transmit(self, apdu: bytes) -> bytes:
        if self.armed and len(apdu) > 1 and apdu[1] == INS_GENERATE_KEY and self.vpcd:
            self.armed = False
            # On vpcd's own thread: closing the socket is what pulling the card looks like.
            self.vpcd.remove()
        return super().transmit(apdu)


@pytest.fixture(scope="module")
def tps() -> Iterator[SimulatedTps]:
    config = TpsConfig(
        default_policy=TokenPolicy(pin_reset=True), allow_multiple_active_tokens=True
    )
    users = UserDirectory([User(USER, PASSWORD, "John Doe")])
    with SimulatedTps(config, users=users).in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tps: SimulatedTps) -> Path:
    """State (with the TPS's CA in the trust store), config and the secret files."""
    base = tmp_path_factory.mktemp("e2e")
    store = TrustStore(base / "state" / "escd" / "trust", system_cas=False)
    result = store.import_authorities([x509.load_pem_x509_certificate(tps.ca_certificate_pem)])
    assert result.added
    (base / "config.yaml").write_text(
        f"tps:\n  url: {tps.url}\n  message_timeout: 20\n"
        "trust:\n  system_cas: false\n"
        "jobs:\n  keep_finished: 5\n"
    )
    for name, value in (
        ("password", PASSWORD),
        ("wrong", WRONG_PASSWORD),
        ("pin", PIN),
        ("new-pin", NEW_PIN),
    ):
        (base / name).write_text(value + "\n")
    return base


@pytest.fixture(scope="module")
def env(pcscd: PrivatePcscd, session_bus: PrivateBus, home: Path) -> dict[str, str]:
    pcscd.start()
    return {**environment(), "XDG_STATE_HOME": str(home / "state")}


@pytest.fixture(scope="module")
def card(pcscd: PrivatePcscd) -> Iterator[VpcdCard]:
    vpcd = VpcdCard(SimulatedCard(blank_card()), pcscd.port_for(0))
    vpcd.insert()
    assert vpcd.seen.wait(TIMEOUT)
    yield vpcd
    vpcd.remove()


@pytest.fixture(scope="module")
def daemon(env: dict[str, str], home: Path, card: VpcdCard) -> Iterator[EscdProcess]:
    args = ["--config", str(home / "config.yaml"), "--log-level", "traffic"]
    with EscdProcess(env, args).start() as process:
        process.wait_for(rf"token {cuid(card)} in .*: no_applet", TIMEOUT)
        yield process
        assert process.alive, process.output()


def cuid(card: VpcdCard) -> str:
    return card.card.state.cuid.hex()


def escctl(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ESCCTL, *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def info(env: dict[str, str], token: str) -> dict[str, object]:
    result = escctl(env, "info", token, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_format_makes_a_blank_card_uninitialized(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard
) -> None:
    token = cuid(card)
    result = escctl(
        env, "format", token, "--yes", "--user", USER, "--password-file", str(home / "password")
    )
    assert result.returncode == 0, result.stderr
    assert f"format of token {token} succeeded" in result.stdout
    assert "PROGRESS_APPLET_BLOCK" in result.stderr and "100%" in result.stderr
    assert info(env, token)["state"] == "uninitialized"


def test_wrong_password_is_a_named_error_and_changes_nothing(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard
) -> None:
    token = cuid(card)
    before = card.card.state.to_json()
    result = escctl(
        env, "enroll", token, "--user", USER, "--password-file", str(home / "wrong"),
        "--pin-file", str(home / "pin"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "enroll failed: io.github.escd.Escd1.Error.Tps" in result.stderr
    assert "cannot validate your credentials" in result.stderr
    assert "(TPS status 14)" in result.stderr
    assert card.card.state.to_json() == before
    assert info(env, token)["state"] == "uninitialized"


@pytest.mark.parametrize("middleware", list(MODULES))
def test_enroll_gives_an_enrolled_token_the_middleware_logs_in_to(
    daemon: EscdProcess,
    env: dict[str, str],
    home: Path,
    card: VpcdCard,
    pcscd: PrivatePcscd,
    middleware: str,
) -> None:
    module = MODULES[middleware]()
    token = cuid(card)
    if info(env, token)["state"] != "enrolled":
        # The new PIN typed at escctl's prompt (twice: it asks to confirm).
        result = escctl(
            env, "enroll", token, "--user", USER, "--password-file", str(home / "password"),
            stdin=f"{PIN}\n{PIN}\n",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "New PIN (4-10 characters):" in result.stderr
        assert "PROGRESS_KEY_GENERATION" in result.stderr
    data = info(env, token)
    assert data["state"] == "enrolled"
    assert len(data["certificates"]) == 2  # type: ignore[arg-type]
    listing = pkcs11_tool(pcscd, module, "-O")
    assert listing.returncode == 0, listing.stderr
    assert "Certificate Object; type = X.509 cert" in listing.stdout
    assert "UID=jdoe" in listing.stdout
    logged_in = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", PIN)
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Private Key Object; RSA" in logged_in.stdout


def test_reset_pin_the_new_pin_works_the_old_one_fails(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard, pcscd: PrivatePcscd
) -> None:
    token = cuid(card)
    result = escctl(
        env, "reset-pin", token, "--user", USER, "--password-file", str(home / "password"),
        "--pin-file", str(home / "new-pin"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    module = MODULES["opensc"]()
    assert pkcs11_tool(pcscd, module, "-O", "--login", "--pin", NEW_PIN).returncode == 0
    old = pkcs11_tool(pcscd, module, "-O", "--login", "--pin", PIN)
    assert old.returncode != 0 and "CKR_PIN_INCORRECT" in old.stderr


def test_renew_refused_by_the_tps_is_not_supported(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard
) -> None:
    result = escctl(env, "renew", cuid(card), "--user", USER)
    assert result.returncode == 1
    assert "renew failed: io.github.escd.Escd1.Error.NotSupported" in result.stderr
    assert "(TPS status 0)" in result.stderr


def test_tps_dropping_the_connection_is_a_named_error(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard, tps: SimulatedTps
) -> None:
    config = TpsConfig(faults=Faults(drop_at_message=3))
    # The same CA, so the daemon trusts this one too; --tps sends this run there.
    with SimulatedTps(config, ca=tps.ca).in_thread() as broken:
        result = escctl(
            env, "reset-pin", cuid(card), "--tps", broken.url, "--user", USER,
            "--password-file", str(home / "password"), "--pin-file", str(home / "new-pin"),
        )  # fmt: skip
    assert result.returncode == 1
    assert "reset-pin failed: io.github.escd.Escd1.Error.Network" in result.stderr
    assert "(local status 28)" in result.stderr
    assert info(env, cuid(card))["state"] == "enrolled"


def test_card_pulled_during_key_generation_is_token_removed(
    daemon: EscdProcess, env: dict[str, str], home: Path, pcscd: PrivatePcscd
) -> None:
    pulled = PullOnKeygen(blank_card())
    vpcd = VpcdCard(pulled, pcscd.port_for(1))
    pulled.vpcd = vpcd
    token = pulled.state.cuid.hex()
    mark = daemon.mark()
    vpcd.insert()
    try:
        daemon.wait_for(rf"token {token} in .*: no_applet", TIMEOUT, start=mark)
        secrets_args = ("--user", USER, "--password-file", str(home / "password"))
        assert escctl(env, "format", token, "--yes", *secrets_args).returncode == 0
        pulled.armed = True
        result = escctl(env, "enroll", token, *secrets_args, "--pin-file", str(home / "pin"))
        assert result.returncode == 1, result.stdout
        assert "enroll failed: io.github.escd.Escd1.Error.TokenRemoved" in result.stderr
        assert not pulled.armed
        assert daemon.alive
        # Back in: the daemon reads it again (formatted, the enrollment never finished).
        mark = daemon.mark()
        vpcd.insert()
        daemon.wait_for(rf"token {token} in .*: uninitialized", TIMEOUT, start=mark)
    finally:
        vpcd.remove()


def test_escctl_vanishing_mid_prompt_cancels_its_job(
    daemon: EscdProcess, env: dict[str, str], home: Path, card: VpcdCard
) -> None:
    token = cuid(card)
    with subprocess.Popen(
        [ESCCTL, "reset-pin", token, "--user", USER, "--password-file", str(home / "password")],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        assert process.stderr is not None
        mark = daemon.mark()
        prompt = ""
        while "New PIN" not in prompt:  # until escctl waits at its new-PIN prompt
            char = process.stderr.read(1)
            assert char, f"escctl ended before the new-PIN prompt: {prompt}"
            prompt += char
        process.send_signal(signal.SIGKILL)
        process.wait(TIMEOUT)
    daemon.wait_for(rf"reset-pin of token {token} canceled: ", TIMEOUT, start=mark)
    last = asyncio.run(_last_operation(token))
    assert last["error"] == "io.github.escd.Escd1.Error.Canceled"
    assert last["operation"] == "reset-pin" and last["status_source"] == "local"


async def _last_operation(token: str) -> dict[str, object]:
    client = await EscdClient.connect()
    try:
        (value,) = await client.call(
            token_path(token), PROPERTIES_INTERFACE, "Get", "ss", [TOKEN_INTERFACE, "LastOperation"]
        )
    finally:
        client.close()
    return {key: variant.value for key, variant in value.value.items()}


def test_the_traffic_log_of_everything_has_no_secret(daemon: EscdProcess) -> None:
    text = daemon.output()
    assert "TRAFFIC" in text and "TOKEN_PDU_REQUEST" in text  # the most verbose level ran
    assert "extended-login" in text or "EXTENDED_LOGIN" in text
    for secret in (*SECRETS, "pdu_data"):
        assert secret not in text, secret
    assert process_alive(daemon.pid)
