# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home, trust, token settings and ESC import through a daemon running in this process.

The daemon is the real composition over the simulator's in-process readers, on the
private session bus, with its own state directory; the phone-home server is the
simulated Dogtag TPS over TLS on loopback, with a CA of its own that nobody trusts until
a test says so. Everything is observed on the bus through a separate client connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from dbus_fast import DBusError, Variant

from escd.config import Config, load_config
from escd.ctl.agent import ESCCTL_CAPABILITIES
from escd.ctl.client import EscdClient, JobView
from escd.daemon import Daemon
from escd.dbus_service.names import (
    ERROR_INVALID_ARGS,
    MANAGER_INTERFACE,
    MANAGER_PATH,
    PROPERTIES_INTERFACE,
    TOKEN_INTERFACE,
    token_path,
)
from escd.errors import ERROR_PREFIX
from escd.model import PhoneHomeState
from escd.sim.bus import PrivateBus
from escd.sim.card import SimulatedCard, enrolled_card, formatted_card
from escd.sim.reader import SimReaderBackend
from escd.sim.tps import SimulatedTps
from escd.sim.tps_config import TpsConfig
from escd.trust import fingerprint, parse_certificates
from tests.support.agents import ScriptedAgent, connect_agent
from tests.support.embedded import Signals, serving

TIMEOUT = 10.0


class Harness:
    """One daemon, its readers, a bus client recording the daemon's signals."""

    def __init__(self, state: Path, config_path: Path) -> None:
        self.state = state
        self.config_path = config_path
        self.readers: SimReaderBackend | None = None
        self.daemon: Daemon | None = None
        self.client: EscdClient | None = None
        self._signals: Signals | None = None
        self._serving = contextlib.AsyncExitStack()

    async def start(self, config: Config | None = None) -> Harness:
        self.readers = SimReaderBackend(asyncio.get_running_loop(), 2)
        if config is None:
            config = load_config([self.config_path])
        self.daemon = Daemon(
            config, config_files=[self.config_path], backend=self.readers, state=self.state
        )
        self.client, self._signals = await self._serving.enter_async_context(
            serving(self.daemon, TIMEOUT)
        )
        return self

    async def stop(self) -> None:
        await self._serving.aclose()
        self.client = None
        self.daemon = None

    @property
    def signals(self) -> Signals:
        assert self._signals is not None, "the daemon was never started"
        return self._signals

    async def manager(self, member: str, signature: str = "", *body: Any) -> list[Any]:
        assert self.client is not None
        return await self.client.call(MANAGER_PATH, MANAGER_INTERFACE, member, signature, [*body])

    async def props(self, path: str) -> dict[str, Any]:
        assert self.client is not None
        (values,) = await self.client.call(
            path, PROPERTIES_INTERFACE, "GetAll", "s", [TOKEN_INTERFACE]
        )
        return {name: variant.value for name, variant in values.items()}

    async def insert(self, card: SimulatedCard, reader: int = 0) -> str:
        """Insert and wait for the token object; its path."""
        assert self.readers is not None
        mark = self.signals.mark()
        self.readers.insert(self.readers.readers[reader], card)
        path = token_path(card.state.cuid.hex())
        await self.signals.wait_for(
            lambda m: m.member == "InterfacesAdded" and m.body[0] == path, mark, TIMEOUT
        )
        return path

    async def remove(self, reader: int = 0) -> None:
        assert self.readers is not None
        mark = self.signals.mark()
        self.readers.remove(self.readers.readers[reader])
        await self.signals.wait_for(lambda m: m.member == "InterfacesRemoved", mark, TIMEOUT)

    async def reinsert(self, card: SimulatedCard) -> str:
        await self.remove()
        return await self.insert(card)

    async def settled(
        self, path: str, *, wanted: set[PhoneHomeState] | None = None
    ) -> dict[str, Any]:
        """The token's properties once ``PhoneHomeState`` is past NotAttempted/Running."""
        done = wanted or {s for s in PhoneHomeState if s > PhoneHomeState.RUNNING}
        async with asyncio.timeout(TIMEOUT):
            while True:
                mark = self.signals.mark()
                props = await self.props(path)
                if PhoneHomeState(props["PhoneHomeState"]) in done:
                    return props
                await self.signals.wait_for(
                    lambda m: (
                        m.member == "PropertiesChanged"
                        and m.path == path
                        and "PhoneHomeState" in m.body[1]
                    ),
                    mark,
                    TIMEOUT,
                )


@pytest.fixture
async def tps() -> AsyncIterator[SimulatedTps]:
    async with SimulatedTps(TpsConfig(tls=True)) as server:
        yield server


@pytest.fixture
async def harness(session_bus: PrivateBus, tmp_path: Path) -> AsyncIterator[Harness]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text("")
    running = Harness(tmp_path / "state", config_path)
    try:
        yield running
    finally:
        await running.stop()


def trust_sim_ca(state: Path, tps: SimulatedTps) -> None:
    """What `escctl trust import` of the TPS's CA leaves behind, done before start."""
    from escd.trust import TrustStore

    TrustStore(state / "trust").import_authorities(parse_certificates(tps.ca_certificate_pem))


def card_for(tps: SimulatedTps | None) -> SimulatedCard:
    return SimulatedCard(enrolled_card(phone_home_url=tps.phone_home_url if tps else None))


async def test_a_token_with_a_url_fills_the_properties_without_configuration(
    harness: Harness, tps: SimulatedTps
) -> None:
    trust_sim_ca(harness.state, tps)
    await harness.start()
    card = card_for(tps)
    path = await harness.insert(card)
    props = await harness.settled(path)
    assert PhoneHomeState(props["PhoneHomeState"]) is PhoneHomeState.FETCHED
    assert props["IssuerName"] == "escd simulated TPS"
    assert props["TpsUrl"] == tps.url
    assert props["TokenType"] == "userKey"
    assert props["PhoneHomeUrl"] == tps.phone_home_url
    assert props["EnrollmentUiUrl"] == props["CaChainUrl"] == ""
    stored = json.loads((harness.state / "tokens" / f"{card.state.cuid.hex()}.json").read_text())
    assert stored["phone_home"]["source_url"] == tps.phone_home_url
    assert stored["phone_home"]["fetched_at"]
    assert harness.daemon is not None
    assert harness.daemon.phone_home.resolve_tps(card.state.cuid.hex()).url == tps.url
    assert harness.client is not None
    report = await harness.client.diagnostics({})
    details = report["phone_home"][card.state.cuid.hex()]
    assert details["tps_url"] == {"value": tps.url, "source": "phone-home"}
    assert details["token_type"]["source"] == "phone-home"
    assert {"name": "Operation", "value": tps.url} in details["cached"]["services"]
    assert details["cached"]["fetched_at"] and details["cached"]["source"] == "fetched"


async def test_server_down_fresh_answer_is_kept_and_stale_one_is_shown_from_cache(
    harness: Harness, tps: SimulatedTps
) -> None:
    trust_sim_ca(harness.state, tps)
    await harness.start()
    card = card_for(tps)
    path = await harness.insert(card)
    assert (await harness.settled(path))["PhoneHomeState"] == PhoneHomeState.FETCHED
    url = tps.url
    await tps.stop()
    # Younger than phone_home.max_age: not fetched again (the server is down anyway).
    props = await harness.settled(await harness.reinsert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED and props["TpsUrl"] == url
    harness.config_path.write_text("phone_home:\n  max_age: 0\n")
    await harness.manager("ReloadConfiguration")
    props = await harness.settled(await harness.reinsert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FROM_CACHE
    assert props["TpsUrl"] == url and props["IssuerName"] == "escd simulated TPS"


async def test_no_url_anywhere_is_no_url_and_a_global_url_is_used(
    harness: Harness, tps: SimulatedTps, caplog: pytest.LogCaptureFixture
) -> None:
    trust_sim_ca(harness.state, tps)
    await harness.start()
    card = card_for(None)
    path = await harness.insert(card)
    props = await harness.settled(path)
    assert props["PhoneHomeState"] == PhoneHomeState.NO_URL
    assert props["TpsUrl"] == props["IssuerName"] == props["PhoneHomeUrl"] == ""
    # Setting a global URL takes effect at once for the tokens present, with a warning.
    harness.config_path.write_text(f"phone_home:\n  global_url: {tps.phone_home_url}\n")
    with caplog.at_level(logging.WARNING, logger="escd.daemon"):
        await harness.manager("ReloadConfiguration")
    assert "every token without a Phone Home URL of its own" in caplog.text
    props = await harness.settled(path, wanted={PhoneHomeState.FETCHED})
    assert props["PhoneHomeUrl"] == tps.phone_home_url and props["TpsUrl"] == tps.url
    assert harness.client is not None
    (value,) = await harness.client.call(
        MANAGER_PATH, PROPERTIES_INTERFACE, "Get", "ss", [MANAGER_INTERFACE, "Policy"]
    )
    assert value.value["global_phone_home_url"].value == tps.phone_home_url
    await harness.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="escd.daemon"):
        await harness.start()
    assert "every token without a Phone Home URL of its own" in caplog.text


async def test_untrusted_server_is_refused_with_its_fingerprint_until_pinned(
    harness: Harness, tps: SimulatedTps
) -> None:
    await harness.start()
    card = card_for(tps)
    path = await harness.insert(card)
    props = await harness.settled(path)
    assert props["PhoneHomeState"] == PhoneHomeState.FAILED and props["TpsUrl"] == ""
    (shown,) = await harness.manager("FetchServerCertificate", "s", tps.phone_home_url)
    presented = shown["fingerprint"].value
    assert shown["pinned"].value is False and shown["port"].signature == "u"
    (ca,) = parse_certificates(tps.ca_certificate_pem)
    assert shown["issuer"].value == ca.subject.rfc4514_string()
    (report,) = await harness.manager("GetDiagnostics", "a{sv}", {})
    messages = [event["message"].value for event in report["events"].value]
    assert any("is not trusted" in m and presented in m for m in messages), messages
    (entry,) = await harness.manager(
        "PinServer", "ssa{sv}", tps.phone_home_url, presented, {"subject": Variant("s", "sim")}
    )
    assert entry["kind"].value == "server" and entry["port"].value == tps.port
    props = await harness.settled(await harness.reinsert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED and props["TpsUrl"] == tps.url
    (entries,) = await harness.manager("ListTrust")
    assert [e["id"].value for e in entries] == [entry["id"].value]
    with pytest.raises(DBusError) as refused:
        await harness.manager(
            "PinServer", "ssa{sv}", f"https://jdoe:s3cret@127.0.0.1:{tps.port}/", presented, {}
        )
    assert refused.value.type == ERROR_INVALID_ARGS and "s3cret" not in refused.value.text
    await harness.manager("RemoveTrust", "s", entry["id"].value)
    (entries,) = await harness.manager("ListTrust")
    assert entries == []


async def test_an_imported_pkcs7_ca_chain_is_trusted_only_after_confirmation(
    harness: Harness, tps: SimulatedTps
) -> None:
    await harness.start()
    (ca,) = parse_certificates(tps.ca_certificate_pem)
    chain = pkcs7.serialize_certificates([ca], Encoding.DER)
    (dry_run,) = await harness.manager("ImportAuthority", "aya{sv}", chain, {})
    assert [(c["status"].value, c["fingerprint"].value) for c in dry_run] == [
        ("new", fingerprint(ca))
    ]
    assert (await harness.manager("ListTrust"))[0] == []
    card = card_for(tps)
    props = await harness.settled(await harness.insert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FAILED
    confirmed = {"confirmed": Variant("b", True)}
    (done,) = await harness.manager("ImportAuthority", "aya{sv}", chain, confirmed)
    assert [c["status"].value for c in done] == ["added"]
    (again,) = await harness.manager("ImportAuthority", "aya{sv}", chain, confirmed)
    assert [c["status"].value for c in again] == ["already-trusted"]
    props = await harness.settled(await harness.reinsert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED and props["TpsUrl"] == tps.url
    with pytest.raises(DBusError) as refused:
        await harness.manager("ImportAuthority", "aya{sv}", b"not a certificate", {})
    assert refused.value.type == ERROR_INVALID_ARGS


async def test_hand_set_values_win_and_survive_a_refresh_and_a_restart(
    harness: Harness, tps: SimulatedTps
) -> None:
    trust_sim_ca(harness.state, tps)
    harness.config_path.write_text("phone_home:\n  max_age: 0\n")
    await harness.start()
    card = card_for(tps)
    cuid = card.state.cuid.hex()
    path = await harness.insert(card)
    await harness.settled(path)
    mine = {
        "tps_url": "https://tps.corp.example:8443/tps/tps",
        "issuer_name": "Corp IT",
        "enrollment_ui_url": "https://enroll.corp.example/",
    }
    mark = harness.signals.mark()
    await harness.manager(
        "SetTokenSettings", "sa{sv}", cuid.upper(), {k: Variant("s", v) for k, v in mine.items()}
    )
    await harness.signals.wait_for(
        lambda m: m.member == "PropertiesChanged" and m.path == path and "TpsUrl" in m.body[1],
        mark,
        TIMEOUT,
    )
    expected = {"TpsUrl": mine["tps_url"], "IssuerName": "Corp IT"}
    assert {k: (await harness.props(path))[k] for k in expected} == expected
    props = await harness.settled(await harness.reinsert(card))  # fetched again: max_age 0
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED
    assert {k: props[k] for k in expected} == expected
    assert props["EnrollmentUiUrl"] == mine["enrollment_ui_url"]
    await harness.stop()
    await harness.start()
    props = await harness.settled(await harness.insert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED
    assert {k: props[k] for k in expected} == expected
    (settings,) = await harness.manager("GetTokenSettings", "s", cuid)
    assert {k: v.value for k, v in settings.items() if v.value} == mine
    assert harness.daemon is not None
    assert harness.daemon.phone_home.resolve_tps(cuid).url == mine["tps_url"]
    assert harness.client is not None
    report = await harness.client.diagnostics({})
    assert report["phone_home"][cuid]["tps_url"] == {"value": mine["tps_url"], "source": "admin"}
    assert report["phone_home"][cuid]["admin"] == mine
    # Clearing a value hands it back to phone home.
    await harness.manager("SetTokenSettings", "sa{sv}", cuid, {"tps_url": Variant("s", "")})
    assert (await harness.props(path))["TpsUrl"] == tps.url
    for bad in ({"tps_url": Variant("s", "ftp://x")}, {"colour": Variant("s", "red")}):
        with pytest.raises(DBusError) as refused:
            await harness.manager("SetTokenSettings", "sa{sv}", cuid, bad)
        assert refused.value.type == ERROR_INVALID_ARGS


async def test_a_broken_settings_file_is_set_aside_at_start(
    harness: Harness, tps: SimulatedTps, caplog: pytest.LogCaptureFixture
) -> None:
    trust_sim_ca(harness.state, tps)
    card = card_for(tps)
    broken = harness.state / "tokens" / f"{card.state.cuid.hex()}.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"version": 1, "token": ')
    await harness.start()
    assert not broken.exists()
    assert len(list(broken.parent.glob("*.corrupt-*"))) == 1
    props = await harness.settled(await harness.insert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED
    assert broken.exists()


ESC_DEFAULTS = """\
pref("esc.tps.message.timeout","60");
pref("esc.hide.format","yes");
pref("esc.global.alt.nss.db", "/etc/esc/shared-db");
"""


def esc_profile(home: Path, cuid: str, phone_home_url: str) -> Path:
    profile = home / ".redhat" / "esc" / "a1b2c3d4.default"
    profile.mkdir(parents=True)
    (profile / "prefs.js").write_text(
        f'user_pref("keyIssuerUrl-{cuid}", "{phone_home_url}?cuid={cuid}");\n'
        f'user_pref("keyIssuer-{cuid}", "Imported Corp");\n'
        f'user_pref("Operation-{cuid}", "https://tps.imported.example:8443/tps/tps");\n'
        'user_pref("esc.tps.url", "https://tps.imported.example:8443/tps/tps");\n'
        'user_pref("browser.startup.homepage", "about:blank");\n'
    )
    return profile


async def test_esc_preferences_import_over_dbus_is_idempotent_and_feeds_tokens(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    card = SimulatedCard(formatted_card())  # no URL on the card; the server is unreachable
    cuid = card.state.cuid.hex()
    profile = esc_profile(home, cuid, "https://127.0.0.1:9/tps/phoneHome")
    defaults = tmp_path / "esc-prefs.js"
    defaults.write_text(ESC_DEFAULTS)
    monkeypatch.setenv("HOME", str(home))
    await harness.start()
    count, report = await harness.manager("ImportLegacyPreferences", "sa{sv}", "", {})
    imported = report["imported"].value
    skipped = {s["item"].value: s["reason"].value for s in report["skipped"].value}
    assert report["files"].value == [str(profile / "prefs.js")]
    assert count == len(imported) == 2
    assert imported[0] == f"Phone Home URL of {cuid}: https://127.0.0.1:9/tps/phoneHome"
    assert "Mozilla/XULRunner" in skipped["1 other preference(s)"]
    # The user's config file exists: escd does not edit it and says where the key went.
    snippet = harness.state / "legacy-import.yaml"
    assert f"written to {snippet}" in skipped["esc.tps.url"]
    assert "https://tps.imported.example:8443/tps/tps" in snippet.read_text()
    assert harness.config_path.read_text() == ""
    count, report = await harness.manager("ImportLegacyPreferences", "sa{sv}", str(defaults), {})
    skipped = {s["item"].value: s["reason"].value for s in report["skipped"].value}
    assert "NSS database" in skipped["esc.global.alt.nss.db"]
    assert "hide_format" in snippet.read_text()
    count, report = await harness.manager("ImportLegacyPreferences", "sa{sv}", "", {})
    assert count == 0 and report["imported"].value == []
    props = await harness.settled(await harness.insert(card))
    assert props["PhoneHomeState"] == PhoneHomeState.FROM_CACHE
    assert props["IssuerName"] == "Imported Corp"
    assert props["TpsUrl"] == "https://tps.imported.example:8443/tps/tps"
    assert props["PhoneHomeUrl"] == "https://127.0.0.1:9/tps/phoneHome"
    with pytest.raises(DBusError) as refused:
        await harness.manager("ImportLegacyPreferences", "sa{sv}", str(tmp_path / "none"), {})
    assert refused.value.type == ERROR_INVALID_ARGS


class LogWaiter(logging.Handler):
    """Lets a test wait for a log message of escd (no polling).

    It lowers the ``escd`` logger to DEBUG while it listens: an in-process daemon leaves
    the root logger at WARNING until a configuration reload applies ``log.level``.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = pattern
        self.loop = asyncio.get_running_loop()
        self.seen = asyncio.Event()
        self._logger = logging.getLogger("escd")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        if self.pattern in record.getMessage():
            self.loop.call_soon_threadsafe(self.seen.set)

    async def __aenter__(self) -> LogWaiter:
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                async with asyncio.timeout(TIMEOUT):
                    await self.seen.wait()
        finally:
            self._logger.removeHandler(self)
            self._logger.setLevel(self._level)


async def test_first_start_offers_the_esc_import_once_and_imports_only_when_configured(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    cuid = "40907001aabbccddeeff"
    esc_profile(home, cuid, "https://127.0.0.1:9/tps/phoneHome")
    monkeypatch.setenv("HOME", str(home))
    token_file = harness.state / "tokens" / f"{cuid}.json"
    async with LogWaiter("run 'escctl import-esc-prefs'"):
        await harness.start()
    assert (harness.state / "legacy-import-offered").exists()
    assert not token_file.exists()
    await harness.stop()
    harness.config_path.write_text("legacy:\n  import_on_first_start: true\n")
    await harness.start()  # offered before: nothing happens, even when configured now
    assert not token_file.exists()
    await harness.stop()
    (harness.state / "legacy-import-offered").unlink()
    async with LogWaiter("imported the ESC profile"):
        await harness.start()
    assert json.loads(token_file.read_text())["phone_home"]["issuer_name"] == "Imported Corp"
    (settings,) = await harness.manager("GetTokenSettings", "s", cuid)
    assert all(v.value == "" for v in settings.values())  # imported data is not admin data


async def run_phone_home_job(harness: Harness, path: str, **options: Variant) -> JobView:
    """``Token.PhoneHome`` with a handle_token, followed to its end."""
    assert harness.client is not None
    client = harness.client
    handle = "phonehome_test"
    async with client.watch_job(client.job_path(handle)) as watch:
        job = await client.start_operation(
            path, "PhoneHome", {"handle_token": Variant("s", handle), **options}
        )
        assert job == client.job_path(handle)
        async with asyncio.timeout(TIMEOUT):
            async for view in watch.updates():
                if view.completed:
                    assert view.operation == "phone-home"
                    return view
    raise AssertionError("the job never completed")


async def test_phone_home_job_reports_tls_untrusted_with_the_fingerprint_then_succeeds(
    harness: Harness, tps: SimulatedTps
) -> None:
    await harness.start()
    card = card_for(tps)
    path = await harness.insert(card)
    assert (await harness.settled(path))["PhoneHomeState"] == PhoneHomeState.FAILED
    failed = await run_phone_home_job(harness, path)
    assert failed.result["error"] == ERROR_PREFIX + "TlsUntrusted"
    (shown,) = await harness.manager("FetchServerCertificate", "s", tps.phone_home_url)
    assert shown["fingerprint"].value in failed.result["message"]
    await harness.manager(
        "PinServer", "ssa{sv}", tps.phone_home_url, shown["fingerprint"].value, {}
    )
    done = await run_phone_home_job(harness, path)
    assert done.result["error"] == "" and done.state == 4
    props = await harness.props(path)
    assert props["PhoneHomeState"] == PhoneHomeState.FETCHED and props["TpsUrl"] == tps.url
    # Fresh now: without force nothing is fetched, so a stopped server does not matter.
    await tps.stop()
    assert (await run_phone_home_job(harness, path)).result["error"] == ""
    forced = await run_phone_home_job(harness, path, force=Variant("b", True))
    assert forced.result["error"] == ERROR_PREFIX + "Network"
    assert (await harness.props(path))["PhoneHomeState"] == PhoneHomeState.FROM_CACHE


async def test_a_phone_home_job_asks_to_trust_the_server_but_an_insertion_never_does(
    harness: Harness, tps: SimulatedTps
) -> None:
    await harness.start()
    agent = ScriptedAgent(answers={"trust": True})
    bus, _ = await connect_agent(agent, capabilities=ESCCTL_CAPABILITIES)
    try:
        path = await harness.insert(card_for(tps))
        # The phone home on insertion fails in the background, and asks nobody.
        assert (await harness.settled(path))["PhoneHomeState"] == PhoneHomeState.FAILED
        assert agent.requests == []
        assert (await harness.manager("ListTrust")) == [[]]
        done = await run_phone_home_job(harness, path)
        assert done.result["error"] == "" and done.state == 4
        assert agent.kinds() == ["tls-trust"]
        ask = agent.requests[0]
        assert harness.client is not None
        assert ask.job == harness.client.job_path("phonehome_test")
        where = f"127.0.0.1:{tps.port}"
        assert ask.title == f"Untrusted certificate from the Phone Home server {where}"
        (shown,) = await harness.manager("FetchServerCertificate", "s", tps.phone_home_url)
        assert ask.certificate["fingerprint"] == shown["fingerprint"].value
        assert shown["pinned"].value is True
        props = await harness.props(path)
        assert props["PhoneHomeState"] == PhoneHomeState.FETCHED and props["TpsUrl"] == tps.url
        (entries,) = await harness.manager("ListTrust")
        assert [(e["kind"].value, e["fingerprint"].value) for e in entries] == [
            ("server", shown["fingerprint"].value)
        ]
        # Trusted from now on: a forced fetch asks nothing.
        forced = await run_phone_home_job(harness, path, force=Variant("b", True))
        assert forced.result["error"] == "" and agent.kinds() == ["tls-trust"]
    finally:
        bus.disconnect()


@pytest.mark.parametrize("answer", ["declined", "unanswered"])
async def test_a_phone_home_job_whose_trust_prompt_is_declined_or_unanswered_fails(
    harness: Harness, tps: SimulatedTps, answer: str
) -> None:
    harness.config_path.write_text("agent:\n  prompt_timeout: 1\n")
    await harness.start()
    agent = ScriptedAgent(answers={"trust": False})
    if answer == "unanswered":
        agent.hang.add("tls-trust")
    bus, _ = await connect_agent(agent, capabilities=ESCCTL_CAPABILITIES)
    try:
        path = await harness.insert(card_for(tps))
        assert (await harness.settled(path))["PhoneHomeState"] == PhoneHomeState.FAILED
        failed = await run_phone_home_job(harness, path)
        (shown,) = await harness.manager("FetchServerCertificate", "s", tps.phone_home_url)
        if answer == "declined":
            assert failed.result["error"] == ERROR_PREFIX + "TlsUntrusted"
            assert shown["fingerprint"].value in failed.result["message"]
        else:
            assert failed.result["error"] == ERROR_PREFIX + "Timeout"
            await agent.wait_withdrawn(agent.requests[0].request_id)
        assert agent.kinds() == ["tls-trust"]
        assert (await harness.manager("ListTrust")) == [[]]
        # Not left Running while the user was asked.
        assert (await harness.props(path))["PhoneHomeState"] == PhoneHomeState.FAILED
    finally:
        bus.disconnect()


async def test_no_url_anywhere_asks_the_agent_once_and_remembers_the_answer(
    harness: Harness, tps: SimulatedTps
) -> None:
    trust_sim_ca(harness.state, tps)
    await harness.start()
    agent = ScriptedAgent(answers={"url": "not a url"})
    bus, _ = await connect_agent(agent)
    try:
        card = card_for(None)
        path = await harness.insert(card)
        first = await agent.wait_asked("phone-home-url")
        assert [f.id for f in first.fields] == ["url"] and first.job == "/"
        agent.answers["url"] = tps.phone_home_url  # the second attempt is usable
        second = await agent.wait_asked("phone-home-url", 2)
        assert second.attempt == 2 and "not a usable Phone Home URL" in second.previous_error
        props = await harness.settled(path)
        assert props["PhoneHomeState"] == PhoneHomeState.FETCHED
        assert props["PhoneHomeUrl"] == tps.phone_home_url and props["TpsUrl"] == tps.url
    finally:
        bus.disconnect()
    # Remembered for this token: no agent is needed any more.
    props = await harness.settled(await harness.reinsert(card))
    assert props["PhoneHomeUrl"] == tps.phone_home_url
    assert len(agent.kinds()) == 2
    # Without an agent, a token without a URL is simply NoUrl.
    other = SimulatedCard(enrolled_card())
    await harness.remove()
    props = await harness.settled(await harness.insert(other))
    assert props["PhoneHomeState"] == PhoneHomeState.NO_URL
    failed = await run_phone_home_job(harness, token_path(other.state.cuid.hex()))
    assert failed.result["error"] == ERROR_PREFIX + "PhoneHomeFailed"
    assert "no Phone Home URL" in failed.result["message"]
