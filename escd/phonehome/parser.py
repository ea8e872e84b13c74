# SPDX-License-Identifier: GPL-2.0-or-later
"""The phone-home answer: a Dogtag ``ServiceInfo`` XML document into ``PhoneHomeInfo``.

Pure: bytes in, a frozen ``PhoneHomeInfo`` or a ``PhoneHomeError(reason)`` out. No
sockets, no httpx, no logging (the client logs). The answer is untrusted input (it is
usually fetched over plain http: the issuer URL Dogtag writes to cards by default is an
http one, TPS CS.cfg ``op.*.issuerinfo.value``), so it goes through defusedxml with
DTDs, entities and external references forbidden, after a size check made before any
parsing.

What ESC requires (ESC.js ``phoneHome``) we require: a ``ServiceInfo`` root, a non-empty
``IssuerName`` and a ``Services`` element. Every element child of ``Services`` is kept,
in order, unknown ones included, so the cache can show what the server said. URLs are
checked for form only (http or https, with a host); whether plain http may be used is
the caller's policy (``escd.trust.check_url_allowed``), not the parser's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

# No stubs in the dev set (types-defusedxml would remove the need for these ignores).
import defusedxml
import defusedxml.ElementTree

from escd.errors import PhoneHomeError
from escd.log import REDACTED

#: The default cap on an answer. A Java TPS serves a file of a few hundred bytes.
DEFAULT_MAX_SIZE = 65536

ROOT = "ServiceInfo"
ISSUER_NAME = "IssuerName"
SERVICES = "Services"

#: ``Services`` children escd understands, mapped to ``PhoneHomeInfo`` fields.
KNOWN_SERVICES = {
    "Operation": "tps_url",
    "UI": "enrollment_ui_url",
    "EnrolledTokenBrowserURL": "enrolled_token_browser_url",
    "EnrolledTokenURL": "enrolled_token_url",
    "TokenType": "token_type",
    "CAChainUI": "ca_chain_url",
}
_URL_FIELDS = frozenset(KNOWN_SERVICES) - {"TokenType"}

# An XML declaration that names an encoding; only looked for in the first bytes.
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\sencoding\s*=", re.ASCII)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# The user name and password of ``scheme://user:password@host/…``, read as urlsplit does.
_USERINFO = re.compile(r"^([^/?#]*//)[^/?#]*@")


@dataclass(frozen=True, slots=True)
class PhoneHomeInfo:
    """What a phone-home server says about a token's issuer and TPS."""

    issuer_name: str
    tps_url: str | None = None
    enrollment_ui_url: str | None = None
    enrolled_token_browser_url: str | None = None
    enrolled_token_url: str | None = None
    token_type: str | None = None
    ca_chain_url: str | None = None
    #: Every ``Services`` child as (element name, stripped text), in document order.
    services: tuple[tuple[str, str], ...] = ()
    #: Optional values that were present but unusable (dropped from the typed fields).
    problems: tuple[str, ...] = ()


def parse_service_info(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> PhoneHomeInfo:
    """Parse a phone-home answer; raises ``PhoneHomeError`` with the reason it is unusable."""
    if len(data) > max_size:
        raise PhoneHomeError(f"the answer is larger than {max_size} bytes")
    if not data.strip():
        raise PhoneHomeError("the answer is empty")
    _check_encoding(data)
    try:
        root = defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DTDForbidden as exc:
        raise PhoneHomeError("the answer contains a DTD, which is not allowed") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise PhoneHomeError("the answer declares entities, which is not allowed") from exc
    except defusedxml.DefusedXmlException as exc:
        raise PhoneHomeError(f"the answer uses forbidden XML ({exc.__class__.__name__})") from exc
    except ParseError as exc:
        raise PhoneHomeError(f"the answer is not well-formed XML ({exc})") from exc
    except (ValueError, LookupError) as exc:
        # pyexpat raises these for an encoding it cannot use.
        raise PhoneHomeError("the answer declares an encoding that cannot be read") from exc
    return _from_root(root)


def build_info(issuer_name: str, services: Iterable[tuple[str, str]]) -> PhoneHomeInfo:
    """A ``PhoneHomeInfo`` from already extracted values, checked as a parsed answer is.

    The token store uses it to rebuild cached answers and the ESC importer to turn ESC's
    per-token preferences into one, so every source goes through the same rules.
    """
    issuer = issuer_name.strip()
    if not issuer:
        raise PhoneHomeError(f"{ISSUER_NAME} is missing or empty")
    kept = tuple((name, text.strip()) for name, text in services)
    values: dict[str, str | None] = dict.fromkeys(KNOWN_SERVICES.values())
    problems: list[str] = []
    seen: set[str] = set()
    for name, text in kept:
        field_name = KNOWN_SERVICES.get(name)
        if field_name is None:
            continue
        if name in seen:
            # ESC let the last one win; two Operation URLs from one server mean a broken
            # or tampered answer, and guessing which one gets the user's password is wrong.
            raise PhoneHomeError(f"{name} appears more than once")
        seen.add(name)
        if not text:
            continue
        if name in _URL_FIELDS:
            why = url_problem(text)
            if why is not None:
                if name == "Operation":
                    # The TPS URL decides where credentials go: never guess around it.
                    raise PhoneHomeError(f"Operation is not a usable TPS URL: {why}")
                problems.append(f"{name} ignored: {why}")
                continue
        values[field_name] = text
    return PhoneHomeInfo(
        issuer_name=issuer,
        tps_url=values["tps_url"],
        enrollment_ui_url=values["enrollment_ui_url"],
        enrolled_token_browser_url=values["enrolled_token_browser_url"],
        enrolled_token_url=values["enrolled_token_url"],
        token_type=values["token_type"],
        ca_chain_url=values["ca_chain_url"],
        services=kept,
        problems=tuple(problems),
    )


def url_problem(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL with a host, or None if it is one."""
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return "it contains spaces or control characters"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "it is not an http:// or https:// URL"
    if not parts.hostname:
        return "it has no host"
    if port == 0:
        return "it has port 0"
    if parts.username is not None or parts.password is not None:
        return "it carries a user name or password"
    return None


def redact_userinfo(text: str) -> str:
    """``text`` with a URL's user name and password replaced, to show it in a message.

    ``url_problem`` refuses such URLs; the error that says so must not repeat them.
    """
    return _USERINFO.sub(lambda match: f"{match.group(1)}{REDACTED}@", text, count=1)


def _check_encoding(data: bytes) -> None:
    # XML without a declaration must be UTF-8 (or carry a BOM). expat would reject bad
    # bytes too, but with a line/column message that does not say what is wrong.
    if data.startswith(_BOMS) or _DECLARED_ENCODING.match(data[:200]):
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PhoneHomeError(
            f"the answer is not UTF-8 (byte {exc.start}) and declares no encoding"
        ) from exc


def _from_root(root: Element) -> PhoneHomeInfo:
    if root.tag != ROOT:
        raise PhoneHomeError(f"the document root is <{_shown(root.tag)}>, not <{ROOT}>")
    issuer = root.find(ISSUER_NAME)
    if issuer is None:
        raise PhoneHomeError(f"{ISSUER_NAME} is missing")
    services = root.find(SERVICES)
    if services is None:
        raise PhoneHomeError(f"{SERVICES} is missing")
    # ESC reads a value from the element's first text node (``firstChild.data``): the
    # text before any markup nested inside it, which is what ``Element.text`` holds.
    children = [(str(child.tag), child.text or "") for child in services]
    return build_info(issuer.text or "", children)


def _shown(tag: object) -> str:
    text = str(tag)
    return text if len(text) <= 60 else text[:57] + "..."
