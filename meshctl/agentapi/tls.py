"""Mutual TLS for the agent API over TCP: who may talk to an agent, and which agent is which.

The agent accepts only clients whose certificate the CA signed (TLS 1.3, client certificate
required). The CLI accepts only an agent whose certificate the same CA signed AND names the
node it wants (DNS SAN = node name, checked as the TLS server name), so an agent answering at
another node's address is refused before a byte of the API is sent. Plain TCP exists for labs
only, and both sides must ask for it (`--insecure`, `[agents] insecure = true`).

Every way this fails gets one sentence naming the node and the cause: a wrong CA, an expired
certificate, a certificate for another node, an unreachable address, an agent without TLS, a
client certificate the agent refused.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from meshctl.agentapi.protocol import AgentApiError
from meshctl.errors import MeshctlError

ENV_CA, ENV_CERT, ENV_KEY = "MESHCTL_AGENT_CA", "MESHCTL_AGENT_CERT", "MESHCTL_AGENT_KEY"
HANDSHAKE_TIMEOUT_S = 10.0

# OpenSSL X509_V_ERR_* codes the CLI explains in words
_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH = 10, 9, 62
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
_CLIENT_REFUSED = {  # alerts an agent sends about our client certificate
    "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED", "TLSV1_ALERT_DECRYPT_ERROR",
}


@dataclass(frozen=True)
class TlsFiles:
    """The CA bundle, and this side's certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_env(cls, ca: Path | None, cert: Path | None, key: Path | None) -> TlsFiles | None:
        """The files given, each replaced by $MESHCTL_AGENT_CA/_CERT/_KEY when set (a CI secret
        mounted as files); None when any is missing."""
        paths = [Path(os.environ[e]) if os.environ.get(e) else p for e, p in
                 ((ENV_CA, ca), (ENV_CERT, cert), (ENV_KEY, key))]
        if any(p is None for p in paths):
            return None
        return cls(*paths)  # type: ignore[arg-type]

    def _load(self, ctx: ssl.SSLContext, who: str) -> ssl.SSLContext:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_verify_locations(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as err:
            raise TlsConfigError(f"{who}: CA {self.ca}: {_reason(err)}") from None
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as err:
            raise TlsConfigError(f"{who}: certificate {self.cert} / key {self.key}: {_reason(err)}") from None
        return ctx

    def server_context(self) -> ssl.SSLContext:
        ctx = self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), "agent")
        ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no API
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), "client")  # checks name and chain


class TlsConfigError(MeshctlError):
    """A CA, certificate or key file that cannot be used."""


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, ssl.SSLError):
        return err.strerror or str(err)
    return getattr(err, "reason", None) or str(err)


@dataclass(frozen=True)
class TcpEndpoint:
    """Where a node's agent listens: its address and port, and the TLS context (None: plain)."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    ca: Path | None = None  # named in errors

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def connect(self, node: str, timeout: float) -> socket.socket:
        """A connected socket, TLS-verified as node `node`'s agent; raises AgentApiError."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=min(timeout, HANDSHAKE_TIMEOUT_S))
        except OSError as err:
            raise AgentApiError(node, unreachable(self, err)) from None
        if self.tls is None:
            sock.settimeout(timeout)
            return sock
        try:
            tls = self.tls.wrap_socket(sock, server_hostname=node)
        except (ssl.SSLError, OSError) as err:
            sock.close()
            raise AgentApiError(node, handshake_failure(self, node, err)) from None
        tls.settimeout(timeout)
        return tls


def unreachable(ep: TcpEndpoint, err: OSError) -> str:
    if isinstance(err, TimeoutError | socket.timeout):
        why = "timed out"
    elif err.errno == errno.ECONNREFUSED:
        why = "connection refused (is its agent running and listening there?)"
    elif err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        why = "no route to the node"
    else:
        why = err.strerror or str(err)
    return f"cannot reach {ep.host}:{ep.port}: {why}"


def handshake_failure(ep: TcpEndpoint, node: str, err: BaseException) -> str:
    """Why the TLS handshake with the agent at `ep` failed, in words."""
    where = f"{ep.host}:{ep.port}"
    if isinstance(err, ssl.SSLCertVerificationError):
        code = err.verify_code
        if code == _HOSTNAME_MISMATCH:
            return (f"the agent at {where} presents a certificate that does not name node {node} "
                    "(another node's agent, or a wrong address under [[nodes]])")
        if code == _EXPIRED:
            return f"the agent at {where} presents an expired certificate: renew it"
        if code == _NOT_YET_VALID:
            return f"the agent at {where} presents a certificate that is not valid yet (clock skew?)"
        if code in _UNKNOWN_ISSUER:
            return f"the agent at {where} presents a certificate not signed by the CA {ep.ca or ''}".rstrip()
        return f"the agent at {where} presents a certificate that does not verify: {err.verify_message}"
    return refused_or_plain(where, err)


def refused_or_plain(where: str, err: BaseException) -> str:
    """A TLS failure that is not about the agent's certificate."""
    reason = getattr(err, "reason", "") or ""
    if reason == "WRONG_VERSION_NUMBER":
        return f"the agent at {where} does not speak TLS (started with --insecure?)"
    if reason in _CLIENT_REFUSED or isinstance(err, ssl.SSLEOFError):  # EOF: closed without an alert
        why = reason.lower() if reason in _CLIENT_REFUSED else "it closed the connection"
        return (f"the agent at {where} refused our client certificate ({why}): use one signed by the "
                "agents' CA ([agents] cert and key, or $MESHCTL_AGENT_CERT and $MESHCTL_AGENT_KEY)")
    return f"TLS with the agent at {where} failed: {_reason(err)}"
