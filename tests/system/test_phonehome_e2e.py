# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home, trust and ESC migration end to end: real pcscd + vpcd, escd as a subprocess,
the simulated TPS over TLS on loopback, and escctl and busctl as separate processes.

Each test runs a daemon with private state, configuration and home directories. Waits
are for the daemon's log lines (escd logs every phone-home result), never fixed sleeps.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from escd.dbus_service.names import BUS_NAME, TOKEN_INTERFACE, token_path
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, enrolled_card, formatted_card
from escd.sim.pcscd import PrivatePcscd
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import TpsConfig
from escd.sim.tps_db import User, UserDirectory
from escd.sim.vpcd import VpcdCard
from tests.support.escd_process import ESCCTL, EscdProcess, environment

TIMEOUT = 10.0
USER, PASSWORD, PIN = "jdoe", "s3cret-Pa55w0rd", "qK7-pin4"


@dataclass
class Setup:
    env: dict[str, str]
    home: Path
    config: Path
    tps: SimulatedTps
    card: VpcdCard

    @property
    def cuid(self) -> str:
        return self.card.card.state.cuid.hex()

    def escctl(self, *args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ESCCTL, *args],
            env=self.env,
            input=answer if answer is not None else "",
            capture_output=True,
            text=True,
            timeout=30,
        )

    def busctl_get(self, prop: str) -> str:
        result = subprocess.run(
            ["busctl", "--user", "get-property", BUS_NAME, token_path(self.cuid),
             TOKEN_INTERFACE, prop],
            env=self.env, capture_output=True, text=True, timeout=15, check=True,
        )  # fmt: skip
        return result.stdout.strip()

    def reinsert(self, daemon: EscdProcess, pattern: str) -> str:
        """Pull and insert the card; the first log line after that matching ``pattern``."""
        self.card.remove()
        mark = daemon.mark()
        self.card.insert()
        return daemon.wait_for(pattern, TIMEOUT, start=mark)


@pytest.fixture
def setup(pcscd: PrivatePcscd, session_bus: PrivateBus, tmp_path: Path) -> Iterator[Setup]:
    pcscd.start()
    env = environment()
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    config = tmp_path / "config" / "escd" / "config.yaml"
    users = UserDirectory([User(USER, PASSWORD, "John Doe")])
    with SimulatedTps(TpsConfig(tls=True), users=users).in_thread() as tps:
        card = VpcdCard(SimulatedCard(enrolled_card(phone_home_url=tps.phone_home_url)), pcscd.port)
        try:
            yield Setup(env, home, config, tps, card)
        finally:
            card.remove()


def phone_home_ok(setup: Setup) -> str:
    return f"phone home for {setup.cuid}: issuer 'escd simulated TPS'"


def phone_home_failed(setup: Setup) -> str:
    return f"phone home for {setup.cuid} to .* failed"


def test_escctl_answers_the_tls_trust_prompt_of_its_phone_home_job(setup: Setup) -> None:
    with EscdProcess(setup.env).start() as daemon:
        mark = daemon.mark()
        setup.card.insert()
        # On insertion nobody is asked (and escctl is not even running): it just fails.
        daemon.wait_for(phone_home_failed(setup), TIMEOUT, start=mark)
        refused = setup.escctl("phone-home", setup.cuid, answer="n\n")
        assert refused.returncode == 1, refused
        assert "Untrusted certificate from the Phone Home server 127.0.0.1:" in refused.stderr
        assert "Trust this server? [y/N]" in refused.stderr
        assert "phone home failed: io.github.escd.Escd1.Error.TlsUntrusted" in refused.stderr
        assert "--trust-server FINGERPRINT" in refused.stderr
        assert json.loads(setup.escctl("trust", "list", "--json").stdout) == []

        mark = daemon.mark()
        trusted = setup.escctl("phone-home", setup.cuid, answer="y\n")
        assert trusted.returncode == 0, trusted
        shown = next(
            row.split(":", 1)[1].strip()
            for row in trusted.stderr.splitlines()
            if row.strip().startswith("SHA-256:")
        )
        assert f"phone home for {setup.cuid}: fetched" in trusted.stdout
        (entry,) = json.loads(setup.escctl("trust", "list", "--json").stdout)
        assert entry["kind"] == "server" and entry["fingerprint"] == shown
        assert entry["port"] == setup.tps.port
        line = daemon.wait_for(r"the user trusted 127\.0\.0\.1:", TIMEOUT, start=mark)
        assert shown in line

        # Non-interactively: only the fingerprint given is trusted.
        assert setup.escctl("trust", "remove", entry["id"]).returncode == 0
        wrong = setup.escctl("phone-home", setup.cuid, "--force", "--trust-server", "ab" * 32)
        assert wrong.returncode == 1, wrong
        assert "not the one given with --trust-server" in wrong.stderr
        assert json.loads(setup.escctl("trust", "list", "--json").stdout) == []
        right = setup.escctl("phone-home", setup.cuid, "--force", "--trust-server", shown)
        assert right.returncode == 0, right
        assert [
            e["fingerprint"] for e in json.loads(setup.escctl("trust", "list", "--json").stdout)
        ] == [shown]


def test_untrusted_server_then_add_server_then_properties_on_the_bus(setup: Setup) -> None:
    with EscdProcess(setup.env).start() as daemon:
        mark = daemon.mark()
        setup.card.insert()
        line = daemon.wait_for(phone_home_failed(setup), TIMEOUT, start=mark)
        assert "is not trusted (SHA-256 " in line
        info = json.loads(setup.escctl("info", setup.cuid, "--json").stdout)
        assert info["phone_home_state"] == "failed" and info["tps_url"] == ""
        again = setup.escctl("phone-home", setup.cuid)
        assert again.returncode == 1, again
        assert "phone home failed: io.github.escd.Escd1.Error.TlsUntrusted" in again.stderr
        assert "escctl trust add-server" in again.stderr

        refused = setup.escctl("trust", "add-server", setup.tps.phone_home_url, answer="n\n")
        assert refused.returncode == 1, refused
        assert "not pinned" in refused.stderr
        shown = setup.escctl("trust", "add-server", setup.tps.phone_home_url, answer="y\n")
        assert shown.returncode == 0, shown
        fingerprint = next(
            row.split(":", 1)[1].strip() for row in shown.stdout.splitlines() if "SHA-256:" in row
        )
        assert fingerprint in line  # the one the refusal named
        assert f"pinned 127.0.0.1:{setup.tps.port}: {fingerprint}" in shown.stdout

        setup.reinsert(daemon, phone_home_ok(setup))
        assert setup.busctl_get("IssuerName") == 's "escd simulated TPS"'
        assert setup.busctl_get("TpsUrl") == f's "{setup.tps.url}"'
        assert setup.busctl_get("PhoneHomeState") == "u 3"
        text = setup.escctl("info", setup.cuid).stdout
        assert "Issuer:" in text and "escd simulated TPS" in text
        assert setup.tps.url in text
        forced = setup.escctl("phone-home", setup.cuid, "--force")
        assert forced.returncode == 0, forced
        assert f"phone home for {setup.cuid}: fetched" in forced.stdout
        assert setup.tps.url in forced.stdout

        (entry,) = json.loads(setup.escctl("trust", "list", "--json").stdout)
        assert entry["kind"] == "server" and entry["fingerprint"] == fingerprint
        assert setup.escctl("trust", "remove", entry["id"]).returncode == 0
        assert json.loads(setup.escctl("trust", "list", "--json").stdout) == []


def test_imported_ca_chain_is_trusted_after_confirmation(setup: Setup) -> None:
    setup.config.parent.mkdir(parents=True)
    setup.config.write_text("phone_home:\n  max_age: 0\n")  # fetch on every insertion
    ca_file = setup.home / "ca-chain.pem"
    ca_file.write_bytes(setup.tps.ca_certificate_pem)
    with EscdProcess(setup.env).start() as daemon:
        mark = daemon.mark()
        setup.card.insert()
        daemon.wait_for(phone_home_failed(setup), TIMEOUT, start=mark)
        declined = setup.escctl("trust", "import", str(ca_file))  # no answer: not imported
        assert declined.returncode == 1 and "Trust this CA" in declined.stdout, declined
        assert "SHA-256:" in declined.stdout and "subject:" in declined.stdout
        assert json.loads(setup.escctl("trust", "list", "--json").stdout) == []
        accepted = setup.escctl("trust", "import", str(ca_file), answer="y\n")
        assert accepted.returncode == 0 and "trusted: " in accepted.stdout, accepted
        setup.reinsert(daemon, phone_home_ok(setup))
        assert setup.busctl_get("TpsUrl") == f's "{setup.tps.url}"'
        again = setup.escctl("trust", "import", str(ca_file), "--yes")
        assert again.returncode == 0 and "already trusted" in again.stdout


def test_escctl_import_esc_prefs_and_settings(setup: Setup) -> None:
    profile = setup.home / ".redhat" / "esc" / "k3y.default"
    profile.mkdir(parents=True)
    cuid = setup.cuid
    (profile / "prefs.js").write_text(
        f'user_pref("keyIssuerUrl-{cuid}", "{setup.tps.phone_home_url}?cuid={cuid}");\n'
        f'user_pref("keyIssuer-{cuid}", "Old Corp");\n'
        'user_pref("esc.tps.url", "https://tps.old.example:8443/tps/tps");\n'
        'user_pref("esc.hide.format", "yes");\n'
        'user_pref("esc.security.url", "https://so.example/");\n'
    )
    with EscdProcess(setup.env).start() as daemon:
        daemon.wait_for("found an ESC profile in .*escctl import-esc-prefs", TIMEOUT)
        first = setup.escctl("import-esc-prefs")
        assert first.returncode == 0, first
        assert f"read: {profile / 'prefs.js'}" in first.stdout
        assert f"Phone Home URL of {cuid}: {setup.tps.phone_home_url}" in first.stdout
        assert f"into {setup.config}" in first.stdout
        assert "esc.security.url: security-officer mode has no escd equivalent" in first.stdout
        assert "hide_format: true" in setup.config.read_text()
        second = setup.escctl("import-esc-prefs", str(profile), "--json")
        report = json.loads(second.stdout)
        assert report["imported_count"] == 0 and report["imported"] == []

        shown = setup.escctl("settings", cuid, "--tps-url", "https://tps.mine.example/tps/tps")
        assert shown.returncode == 0, shown
        assert "tps-url:" in shown.stdout and "https://tps.mine.example/tps/tps" in shown.stdout
        assert "issuer-name:" in shown.stdout and "(not set)" in shown.stdout
        # The card is inserted now: its TPS URL is the hand-set one, whatever phone home says.
        mark = daemon.mark()
        setup.card.insert()
        daemon.wait_for(f"phone home for {cuid} to .* failed", TIMEOUT, start=mark)
        assert setup.busctl_get("TpsUrl") == 's "https://tps.mine.example/tps/tps"'
        assert setup.busctl_get("IssuerName") == 's "Old Corp"'  # imported, from cache
        assert setup.busctl_get("PhoneHomeState") == "u 2"
        cleared = setup.escctl("settings", cuid[:8], "--clear", "tps-url", "--json")
        assert json.loads(cleared.stdout)["settings"]["tps_url"] == ""
        bad = setup.escctl("settings", cuid, "--phone-home-url", "ftp://nope")
        assert bad.returncode == 1 and "http" in bad.stderr


def test_enroll_needs_no_tps_url_when_the_token_carries_a_phone_home_url(
    setup: Setup, pcscd: PrivatePcscd
) -> None:
    """No configuration at all: the TPS URL comes from the card's phone home."""
    (setup.home / "password").write_text(PASSWORD + "\n")
    (setup.home / "pin").write_text(PIN + "\n")
    (setup.home / "ca.pem").write_bytes(setup.tps.ca_certificate_pem)
    blank = VpcdCard(
        SimulatedCard(formatted_card(phone_home_url=setup.tps.phone_home_url)),
        pcscd.port_for(1),
    )
    cuid = blank.card.state.cuid.hex()
    # At the traffic level, so that the log the secrets are looked for in has every message.
    with EscdProcess(setup.env, ["--log-level", "traffic"]).start() as daemon:
        assert setup.escctl("trust", "import", str(setup.home / "ca.pem"), "--yes").returncode == 0
        mark = daemon.mark()
        blank.insert()
        try:
            daemon.wait_for(f"phone home for {cuid}: issuer", TIMEOUT, start=mark)
            enrolled = setup.escctl(
                "enroll", cuid, "--user", USER,
                "--password-file", str(setup.home / "password"),
                "--pin-file", str(setup.home / "pin"),
            )  # fmt: skip
            assert enrolled.returncode == 0, (enrolled.stdout, enrolled.stderr)
            info = json.loads(setup.escctl("info", cuid, "--json").stdout)
            assert info["state"] == "enrolled" and info["tps_url"] == setup.tps.url
            log = daemon.output()
            assert "TRAFFIC" in log and "TOKEN_PDU_REQUEST" in log  # the most verbose level ran
            assert PASSWORD not in log and PIN not in log
        finally:
            blank.remove()


def test_escctl_phone_home_asks_for_a_url_when_the_token_has_none(
    setup: Setup, pcscd: PrivatePcscd
) -> None:
    (setup.home / "ca.pem").write_bytes(setup.tps.ca_certificate_pem)
    bare = VpcdCard(SimulatedCard(enrolled_card()), pcscd.port_for(1))
    cuid = bare.card.state.cuid.hex()
    with EscdProcess(setup.env).start() as daemon:
        assert setup.escctl("trust", "import", str(setup.home / "ca.pem"), "--yes").returncode == 0
        mark = daemon.mark()
        bare.insert()
        try:
            daemon.wait_for(f"token {cuid} in ", TIMEOUT, start=mark)
            asked = setup.escctl("phone-home", cuid, answer=setup.tps.phone_home_url + "\n")
            assert asked.returncode == 0, asked
            assert "Phone Home URL: " in asked.stderr  # the terminal prompt
            assert setup.tps.url in asked.stdout
            info = json.loads(setup.escctl("info", cuid, "--json").stdout)
            assert info["phone_home_url"] == setup.tps.phone_home_url
        finally:
            bare.remove()
