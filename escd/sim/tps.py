# SPDX-License-Identifier: GPL-2.0-or-later
"""The simulated Dogtag TPS: the in-process API for tests, the demo and frontend
authors, and the thread runner for synchronous code.

``SimulatedTps`` composes the pieces of ``escd.sim.tps_*``: the settings
(``TpsConfig``), the token DB and user directory (``tps_db``), the CA (``escd.sim.ca``), the
TKS (``tps_channel.Tks``), the processors (``tps_flows``, ``tps_enroll``) and the h11
listener (``tps_server``), plus the phone-home document. Typical use::

    async with SimulatedTps(TpsConfig(tls=True)) as tps:
        tps.url               # https://127.0.0.1:<port>/tps/tps
        tps.phone_home_url    # https://127.0.0.1:<port>/tps/phoneHome
        tps.ca_certificate_pem, tps.client_ssl_context(), tps.db, tps.sessions

    with SimulatedTps(config).in_thread() as tps:   # its own loop on its own thread
        ...

With a ``state_dir`` the CA, the TLS credentials, the token DB and the users file live
there (written atomically, private files mode 0600), so a restart keeps them.

Must not: log secrets; hold module-level state (every ``SimulatedTps`` is independent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self
from xml.sax.saxutils import escape

from escd.card.coolkey import IssuerInfo
from escd.sim.ca import CA_CERT_FILE, CertificateAuthority
from escd.sim.tps_channel import Tks
from escd.sim.tps_config import TpsConfig
from escd.sim.tps_db import TokenDb, UserDirectory
from escd.sim.tps_flows import Services, SessionRecord
from escd.sim.tps_server import PHONE_HOME_PATH, TpsHttpServer
from escd.statefile import ensure_dir, write_bytes_atomic

logger = logging.getLogger(__name__)

TOKEN_DB_FILE = "tokens.json"  # noqa: S105 - a file name
USERS_FILE = "users.yaml"
TLS_KEY_FILE = "tls-key.pem"
TLS_CERT_FILE = "tls-cert.pem"
_THREAD_START_TIMEOUT = 30.0


class SimulatedTps:
    """A running (after ``start``) simulated Dogtag TPS with its phone-home service."""

    def __init__(
        self,
        config: TpsConfig | None = None,
        *,
        state_dir: Path | None = None,
        users: UserDirectory | None = None,
        users_file: Path | None = None,
        ca: CertificateAuthority | None = None,
        db: TokenDb | None = None,
    ) -> None:
        self.config = config or TpsConfig()
        self.state_dir = state_dir
        if state_dir is not None:
            ensure_dir(state_dir)
        self.users = users or self._load_users(users_file)
        self.ca = ca or (
            CertificateAuthority.load_or_create(state_dir)
            if state_dir is not None
            else CertificateAuthority.generate()
        )
        self.db = db or TokenDb(
            state_dir / TOKEN_DB_FILE if state_dir is not None else None,
            default_policy=self.config.default_policy,
        )
        #: The most recent sessions, oldest first; each is filled in while it runs.
        self.sessions: deque[SessionRecord] = deque(maxlen=self.config.keep_sessions)
        self._server: TpsHttpServer | None = None
        self._port = 0
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._files_dir: Path | None = None

    def _load_users(self, users_file: Path | None) -> UserDirectory:
        if users_file is not None:
            return UserDirectory.load(users_file)
        if self.state_dir is not None:
            path = self.state_dir / USERS_FILE
            if path.exists():
                return UserDirectory.load(path)
            directory = UserDirectory()
            write_bytes_atomic(path, directory.to_yaml().encode("utf-8"))
            return directory
        return UserDirectory()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the simulated TPS is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.config.tls else 'http'}://{shown}:{self.port}"

    @property
    def url(self) -> str:
        """The token-operation URL (``Operation`` in phone home)."""
        return self.base_url + "/tps/tps"

    @property
    def phone_home_url(self) -> str:
        return self.base_url + PHONE_HOME_PATH

    @property
    def issuer_info_url(self) -> str:
        """What SET ISSUER INFO writes to cards: the phone-home URL unless configured."""
        return self.config.issuer_info_url or self.phone_home_url

    @property
    def ca_certificate_pem(self) -> bytes:
        return self.ca.certificate_pem

    @property
    def ca_certificate_path(self) -> Path:
        """A file holding the CA certificate (in the state directory, or a private temp dir)."""
        return self._files().joinpath(CA_CERT_FILE)

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this TPS's CA (for tests and clients)."""
        context = ssl.create_default_context(cadata=self.ca_certificate_pem.decode("ascii"))
        return context

    def phone_home_xml(self) -> bytes:
        """The ``ServiceInfo`` document, as Dogtag's ``TPSPhoneHome`` serves phoneHome.xml.

        No XML declaration, as in Dogtag's file.
        """
        settings = self.config.phone_home
        services = [
            ("Operation", settings.operation_url or self.url),
            ("UI", settings.ui_url),
            ("EnrolledTokenBrowserURL", settings.enrolled_token_browser_url),
            ("EnrolledTokenURL", settings.enrolled_token_url),
            ("TokenType", settings.token_type),
        ]
        lines = ["<ServiceInfo>", f"<IssuerName>{escape(settings.issuer_name)}</IssuerName>"]
        lines.append("<Services>")
        lines.extend(f"<{name}>{escape(value)}</{name}>" for name, value in services)
        lines += ["</Services>", "</ServiceInfo>", ""]
        return "\n".join(lines).encode("utf-8")

    # -- life cycle ------------------------------------------------------------------------

    def _files(self) -> Path:
        if self._files_dir is None:
            if self.state_dir is not None:
                self._files_dir = self.state_dir
            else:
                self._tempdir = tempfile.TemporaryDirectory(prefix="escd-sim-tps-")
                self._files_dir = Path(self._tempdir.name)
            cert_path = self._files_dir / CA_CERT_FILE
            if not cert_path.exists() or cert_path.read_bytes() != self.ca_certificate_pem:
                write_bytes_atomic(cert_path, self.ca_certificate_pem, mode=0o644)
        return self._files_dir

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        hosts = [self.config.host, "localhost", "127.0.0.1", "::1"]
        credentials = self.ca.server_credentials(hosts)
        directory = self._files()
        key_path, cert_path = directory / TLS_KEY_FILE, directory / TLS_CERT_FILE
        write_bytes_atomic(key_path, credentials.key_pem)
        write_bytes_atomic(cert_path, credentials.certificate_pem, mode=0o644)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        return context

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulated TPS is already running")
        config = self.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = socket.create_server((config.host, config.port), family=family)
        self._port = int(sock.getsockname()[1])
        try:
            # SET ISSUER INFO carries 224 bytes; ESC reads the URL up to its NUL.
            IssuerInfo.from_url(self.issuer_info_url)
        except ValueError:
            sock.close()
            self._port = 0
            raise
        services = Services(
            config=config,
            db=self.db,
            users=self.users,
            ca=self.ca,
            tks=Tks(config.master_key),
            issuer_info_url=self.issuer_info_url,
        )
        self._server = TpsHttpServer(
            services,
            ssl_context=self._ssl_context(),
            phone_home_xml=self.phone_home_xml,
            sessions=self.sessions,
        )
        try:
            await self._server.start(sock)
        except BaseException:
            sock.close()
            self._server = None
            raise
        logger.info("simulated TPS listening on %s", self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir, self._files_dir = None, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Run on a private event loop in a daemon thread, for synchronous tests."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="escd-sim-tps", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(_THREAD_START_TIMEOUT)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(_THREAD_START_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    async def serve_forever(self) -> None:
        """Start (if needed) and run until cancelled."""
        if self._server is None:
            await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
