# SPDX-License-Identifier: GPL-2.0-or-later
"""ESC's "Add Exception", asked during a job: the ``tls-trust`` prompt and the pin it leads to.

When a job (a TPS operation, or ``Token.PhoneHome``) cannot connect because the server's
certificate is not trusted, ``ServerTrustAsker`` shows that certificate to an agent that
advertises the ``tls-trust`` capability, chosen by the job's rules (``escd.agents``:
the starter's agent, the default one, any capable one). If the user accepts, exactly
the certificate shown (the one ``TlsUntrustedError`` carries, by its SHA-256) is pinned
for that host and port, as ``Manager.PinServer`` does, with an event and an INFO log
line; the caller then connects once more, verified against the pin, so a server that
presents another certificate by then is refused. Nothing is pinned without the answer
``trust`` = true; without a capable agent nobody is asked and the job fails with
``TlsUntrusted`` as before (docs/dbus-api.md, "tls-trust").

Never asked outside a job: the background phone home on insertion does not prompt.

Must not: pin a certificate the user was not shown, or log more than host, port,
subject and fingerprint.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from escd.agents import AgentBroker
from escd.errors import PromptRejectedError, TlsUntrustedError
from escd.events import EventKind, EventRing
from escd.tps.session import CertificateDetails, FieldType, Prompt, PromptField, PromptKind
from escd.trust import TrustStore, fingerprint

logger = logging.getLogger(__name__)

#: The id of the one (``bool``) field of a ``tls-trust`` prompt.
TRUST_FIELD = "trust"
#: What ``server`` names in the prompt's texts.
TPS_SERVER = "TPS"
PHONE_HOME_SERVER = "Phone Home server"


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def presented_certificate(untrusted: TlsUntrustedError) -> x509.Certificate | None:
    """The certificate ``untrusted`` names by its fingerprint; None when it is not known."""
    if not untrusted.certificate:
        return None
    try:
        cert = x509.load_der_x509_certificate(untrusted.certificate)
    except ValueError:
        return None
    # Only ever show (and pin) the certificate whose fingerprint the error names.
    return cert if fingerprint(cert) == untrusted.fingerprint else None


def trust_prompt(untrusted: TlsUntrustedError, cert: x509.Certificate, server: str) -> Prompt:
    """The ``tls-trust`` prompt for ``cert``, presented by ``server`` (``TPS``, …)."""
    where = _where(untrusted.host, untrusted.port)
    shown = fingerprint(cert)
    why = untrusted.reason or "no trusted CA vouches for it"
    details = CertificateDetails(
        host=untrusted.host,
        port=untrusted.port,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        fingerprint=shown,
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
        reason=untrusted.reason,
        der=cert.public_bytes(Encoding.DER),
    )
    return Prompt(
        PromptKind.TLS_TRUST,
        (
            PromptField(
                TRUST_FIELD,
                "Trust this server",
                FieldType.BOOL,
                description=f"Accept exactly this certificate (SHA-256 {shown}) at {where}.",
            ),
        ),
        title=f"Untrusted certificate from the {server} {where}",
        description=(
            f"escd cannot verify the certificate the {server} {where} presents: {why}. "
            "Trust it only if you know it is the right one (compare its SHA-256 "
            "fingerprint with the one your administrator gave you). escd then accepts "
            f"exactly this certificate at {where}, and no other; 'escctl trust list' "
            "shows it and 'escctl trust remove' undoes it."
        ),
        certificate=details,
    )


class ServerTrustAsker:
    """Asks an agent whether to trust an untrusted server, and pins its certificate if so."""

    def __init__(self, broker: AgentBroker, trust: TrustStore, ring: EventRing) -> None:
        self._broker = broker
        self._trust = trust
        self._ring = ring

    async def __call__(
        self,
        untrusted: TlsUntrustedError,
        *,
        job: str,
        starter: str,
        server: str,
        token_id: str = "",
    ) -> bool:
        """True when the user trusted the certificate and it is now pinned.

        False when nobody can be asked (no agent with ``tls-trust``, the certificate is
        not known) or the user declined (``trust`` false or missing, ``Error.Rejected``).
        Raises what ``AgentBroker.ask`` raises otherwise (``PromptTimeoutError``,
        ``CanceledError``, ``NoAgentError`` when the agent left while asked).
        """
        where = _where(untrusted.host, untrusted.port)
        cert = presented_certificate(untrusted)
        if cert is None:
            logger.debug("not asking to trust %s: its certificate is not known", where)
            return False
        prompt = trust_prompt(untrusted, cert, server)
        if not self._broker.can_ask(starter, prompt):
            logger.debug("not asking to trust %s: no agent can answer tls-trust", where)
            return False
        try:
            answers = await self._broker.ask(job, starter, prompt)
        except PromptRejectedError:
            answers = {}
        shown = untrusted.fingerprint
        extra = {"ESCD_TOKEN_CUID": token_id} if token_id else {}
        if answers.get(TRUST_FIELD) is not True:
            logger.info(
                "the user did not trust the certificate of %s (SHA-256 %s)",
                where,
                shown,
                extra=extra,
            )
            self._ring.record(
                EventKind.TRUST, f"not trusted by the user: {where} {shown}", token_id=token_id
            )
            return False
        subject = cert.subject.rfc4514_string()
        entry = self._trust.pin_server(untrusted.host, untrusted.port, shown, subject)
        logger.info(
            "the user trusted %s (%s, SHA-256 %s) when job %s asked; pinned",
            where,
            subject,
            entry.fingerprint,
            job,
            extra=extra,
        )
        self._ring.record(
            EventKind.TRUST,
            f"server pinned: {where} {entry.fingerprint} (accepted in a tls-trust prompt)",
            token_id=token_id,
        )
        return True
