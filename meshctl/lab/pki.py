"""The lab's PKI for the agents' mutual TLS: one CA, a server certificate per node, one client.

A node's certificate names the node (DNS SAN = node name, and its underlay address as an IP
SAN): the CLI checks that name, so an agent answering at another node's address is refused. The
client certificate carries clientAuth only, a node certificate serverAuth only. On a real
cluster the same files come from the operator's own CA (cert-manager, Vault); the lab makes them
with `cryptography` (the stdlib cannot sign X.509). Keys are written 0600 (meshctl.state.atomic).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshctl.state.atomic import atomic_write

CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class Authority:
    """A CA that can sign: its certificate and private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(cert, key)

    def issue(self, name: str, *, server: bool, addresses: tuple[str, ...] = (),
              valid: tuple[dt.datetime, dt.datetime] | None = None) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for `name`: a node's server certificate or a client's.
        `valid` overrides the validity window (tests make expired certificates with it)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        since, until = valid or (now - dt.timedelta(minutes=5), now + dt.timedelta(days=LEAF_DAYS))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(since).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            sans: list[x509.GeneralName] = [x509.DNSName(name)]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        atomic_write(cert_path, self.cert.public_bytes(serialization.Encoding.PEM), 0o644)
        atomic_write(key_path, _key_pem(self.key), 0o600)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ca_key_path(ca_cert: Path) -> Path:
    """Where the lab keeps the CA's key: next to its certificate (ca.crt -> ca.key)."""
    return ca_cert.with_suffix(".key")


def ensure_lab_pki(ca: Path, client_cert: Path, client_key: Path) -> Authority:
    """The lab CA at `ca` (made once, its key beside it) and the CLI's client certificate."""
    if ca.exists() and ca_key_path(ca).exists():
        authority = Authority.load(ca, ca_key_path(ca))
    else:
        authority = Authority.create("meshctl lab CA")
        authority.write(ca, ca_key_path(ca))
    if not (client_cert.exists() and client_key.exists()):
        cert, key = authority.issue("meshctl", server=False)
        atomic_write(client_cert, cert, 0o644)
        atomic_write(client_key, key, 0o600)
    return authority


def issue_node(authority: Authority, directory: Path, node: str, address: str) -> tuple[Path, Path]:
    """The server certificate and key of `node` in `directory` (node side), fresh on every call."""
    cert, key = authority.issue(node, server=True, addresses=(address,))
    cert_path, key_path = directory / f"{node}.crt", directory / f"{node}.key"
    atomic_write(cert_path, cert, 0o644)
    atomic_write(key_path, key, 0o600)
    return cert_path, key_path
