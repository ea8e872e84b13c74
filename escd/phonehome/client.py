# SPDX-License-Identifier: GPL-2.0-or-later
"""Phone home over the network: ``GET <url>?cuid=<cuid>`` with httpx, bounded and trust-checked.

Owns the HTTP side of phone home (ESC.js ``phoneHome``): building the request URL, the
plain-http policy, redirects, the size cap, timeouts, and turning httpx's and ssl's
exceptions into escd's (``NetworkError`` and its ``TlsUntrustedError`` and
``InsecureUrlError``, or ``PhoneHomeError`` when the server answered but not usefully).
It also builds the ``httpx.AsyncClient`` that uses the trust store's contexts.

Rules: the XML is parsed by ``escd.phonehome.parser`` only; this module decides nothing
about caching or which URL to use (``escd.phonehome.cache`` and the daemon do). A
connection failure is a ``NetworkError`` so that callers can fall back to a cached
answer; a bad answer is a ``PhoneHomeError``.

Redirects: at most ``MAX_REDIRECTS``, each target checked like the first URL, and never
from https down to http (a TLS-protected phone home must not be steered to a forgeable
one). Compressed answers are not requested and not accepted, so the size cap counts the
bytes that are actually parsed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from escd import __version__
from escd.errors import NetworkError, PhoneHomeError
from escd.phonehome.parser import DEFAULT_MAX_SIZE, PhoneHomeInfo, parse_service_info, url_problem
from escd.trust import check_url_allowed, describe_untrusted, find_cert_verification_error

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
_REQUEST_HEADERS = {
    "User-Agent": f"escd/{__version__}",
    "Accept": "application/xml, text/xml;q=0.9, */*;q=0.1",
    "Accept-Encoding": "identity",
}

ContextFor = Callable[[str, int], ssl.SSLContext]


def phone_home_request_url(url: str, cuid: str) -> str:
    """``url`` with ``cuid=<cuid>`` added to its query (ESC.js ``phoneHome``).

    ESC always appended ``"?cuid="``, which breaks a URL that already has a query; we
    append with ``&`` then. A ``cuid`` already in the query (a URL copied from ESC's
    ``keyIssuerUrl-<id>``) is replaced rather than sent twice. The fragment is dropped.
    """
    why = url_problem(url)
    if why is not None:
        raise PhoneHomeError(f"the Phone Home URL is unusable: {why}")
    parts = urlsplit(url)
    query = parts.query
    if any(key.lower() == "cuid" for key, _ in parse_qsl(query, keep_blank_values=True)):
        query = "&".join(
            item for item in query.split("&") if item.split("=", 1)[0].lower() != "cuid"
        )
    added = f"cuid={quote(cuid.lower(), safe='')}"
    query = f"{query}&{added}" if query else added
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class TrustTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects to each origin with the context trust gives for it.

    One ``AsyncHTTPTransport`` per (scheme, host, port), rebuilt when the trust store
    hands out a different context (a CA imported, a pin added), so a redirect to another
    server is checked against that server's pins, not the first one's.
    """

    def __init__(self, context_for: ContextFor) -> None:
        self._context_for = context_for
        self._transports: dict[
            tuple[str, str, int], tuple[ssl.SSLContext | None, httpx.AsyncHTTPTransport]
        ] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        host, port, _ = _address(url)
        key = (scheme, host, port)
        context = self._context_for(host, port) if scheme == "https" else None
        current = self._transports.get(key)
        if current is None or current[0] is not context:
            if current is not None:
                await current[1].aclose()
            # Phone home is one request per insertion: a connection kept open between
            # them would only hold a socket here and a worker on the server.
            transport = httpx.AsyncHTTPTransport(
                verify=context if context is not None else True,
                trust_env=False,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
            current = (context, transport)
            self._transports[key] = current
        return await current[1].handle_async_request(request)

    async def aclose(self) -> None:
        transports = [transport for _, transport in self._transports.values()]
        self._transports.clear()
        for transport in transports:
            await transport.aclose()


def create_client(context_for: ContextFor, *, timeout: float = 10.0) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose TLS trust comes from ``context_for(host, port)``.

    Pass ``TrustStore.ssl_context_for``, or ``lambda host, port: context`` for one fixed
    context. The client follows no redirects by itself and ignores proxy and CA
    environment variables: trust comes only from escd's trust store.
    """
    return httpx.AsyncClient(
        transport=TrustTransport(context_for),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )


async def fetch_service_info(
    url: str,
    cuid: str,
    client: httpx.AsyncClient,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    timeout: float = 10.0,
    allow_http: Iterable[str] = (),
    certificate_timeout: float = 5.0,
) -> PhoneHomeInfo:
    """Fetch and parse the phone-home answer for one token.

    Raises ``InsecureUrlError`` for plain http to an origin not in ``allow_http``,
    ``TlsUntrustedError`` (with the server's fingerprint) for an untrusted certificate,
    ``NetworkError`` when the server cannot be reached or the transfer fails or takes
    longer than ``timeout`` seconds in all, and ``PhoneHomeError`` for an answer that is
    not a usable ``ServiceInfo`` document (HTTP status, size, XML).
    """
    allowed = tuple(allow_http)
    target = phone_home_request_url(url, cuid)
    check_url_allowed(target, allowed)
    logger.debug("phoning home to %s", target)
    try:
        async with asyncio.timeout(timeout):
            body = await _get(client, target, max_size, allowed, timeout)
    except TimeoutError as exc:
        _, _, where = _address(httpx.URL(target))
        raise NetworkError(f"phone home to {where} took longer than {timeout:g} s") from exc
    except _UntrustedServerError as untrusted:
        # Outside the overall timeout: looking up the fingerprint is a second connection
        # with its own bound, and the user needs it to decide whether to trust the server.
        raise await describe_untrusted(
            untrusted.host, untrusted.port, untrusted.error, certificate_timeout
        ) from untrusted.error
    info = parse_service_info(body, max_size=max_size)
    # DEBUG: the caller logs the result at INFO once it has been stored and published.
    logger.debug(
        "phone home for %s answered: issuer %r, TPS %s",
        cuid.lower(),
        info.issuer_name,
        info.tps_url,
    )
    for problem in info.problems:
        logger.warning("phone home for %s: %s", cuid.lower(), problem)
    return info


class _UntrustedServerError(Exception):
    def __init__(self, host: str, port: int, error: BaseException) -> None:
        super().__init__(f"{host}:{port}")
        self.host = host
        self.port = port
        self.error = error


async def _get(
    client: httpx.AsyncClient,
    target: str,
    max_size: int,
    allow_http: tuple[str, ...],
    timeout: float,
) -> bytes:
    current = target
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request(
            "GET", current, headers=_REQUEST_HEADERS, timeout=httpx.Timeout(timeout)
        )
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise _translate(exc, request.url) from exc
        try:
            if response.has_redirect_location:
                current = _redirect_target(current, response, allow_http)
                logger.debug("phone home redirected to %s", current)
                continue
            return await _read_body(response, max_size)
        except httpx.HTTPError as exc:
            raise _translate(exc, request.url) from exc
        finally:
            await response.aclose()
    raise PhoneHomeError(f"more than {MAX_REDIRECTS} redirects")


def _redirect_target(current: str, response: httpx.Response, allow_http: tuple[str, ...]) -> str:
    location = response.headers.get("Location", "")
    try:
        target = str(response.url.join(location))
    except httpx.InvalidURL as exc:
        raise PhoneHomeError("the server redirected to an invalid URL") from exc
    why = url_problem(target)
    if why is not None:
        raise PhoneHomeError(f"the server redirected to an unusable URL: {why}")
    if urlsplit(current).scheme.lower() == "https" and urlsplit(target).scheme.lower() != "https":
        raise PhoneHomeError(f"the server redirected from https to plain http ({target})")
    check_url_allowed(target, allow_http)
    return target


async def _read_body(response: httpx.Response, max_size: int) -> bytes:
    if response.status_code != 200:
        raise PhoneHomeError(f"the server answered HTTP {response.status_code}")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise PhoneHomeError(f"the server sent a {encoding}-compressed answer, which is refused")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_size:
        raise PhoneHomeError(f"the answer is larger than {max_size} bytes ({declared})")
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > max_size:
            # Stop reading at once: a hostile server could send without end.
            raise PhoneHomeError(f"the answer is larger than {max_size} bytes")
    return bytes(body)


def _translate(exc: httpx.HTTPError, url: httpx.URL) -> Exception:
    host, port, where = _address(url)
    if find_cert_verification_error(exc) is not None:
        return _UntrustedServerError(host, port, exc)
    if isinstance(exc, httpx.TimeoutException):
        return NetworkError(f"{where} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return NetworkError(f"cannot connect to {where} ({_reason(exc)})")
    if isinstance(exc, httpx.TransportError):
        return NetworkError(f"the connection to {where} failed ({_reason(exc)})")
    return PhoneHomeError(f"the request to {where} failed ({exc.__class__.__name__})")


def _reason(exc: BaseException) -> str:
    # The interesting cause sits a few links down (httpx → httpcore → OSError/SSLError).
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ssl.SSLError):
            return f"TLS failed: {current.reason or current.__class__.__name__}"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    return exc.__class__.__name__


def _address(url: httpx.URL) -> tuple[str, int, str]:
    """Host, port (the scheme's default if none) and ``host:port`` as messages show it."""
    port = url.port or (443 if url.scheme == "https" else 80)
    where = f"[{url.host}]:{port}" if ":" in url.host else f"{url.host}:{port}"
    return url.host, port, where
