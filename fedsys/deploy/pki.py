"""TLS certificates and SuperNode authentication keys, built with ``cryptography``.

Flower's SuperLink serves TLS with a certificate signed by a CA that every SuperNode and the
``flwr`` CLI trust (``--root-certificates``); SuperNodes authenticate with an ECDSA key in
OpenSSH format whose public half the SuperLink has registered. Everything here only builds
key material; files are written by :mod:`fedsys.crypto.keys` (private parts 0600).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsys.errors import KeyFileError

NODE_AUTH_CURVE = ec.SECP384R1()  # what `ssh-keygen -t ecdsa -b 384` makes; Flower accepts it


@dataclass(frozen=True)
class NodeAuthKey:
    """A SuperNode's authentication key pair, both halves in OpenSSH encoding."""

    private_openssh: bytes
    public_openssh: bytes


def generate_node_auth_key(comment: str = "") -> NodeAuthKey:
    """ECDSA P-384 key pair in OpenSSH format, as ``flower-supernode`` and ``flwr`` read it."""
    key = ec.generate_private_key(NODE_AUTH_CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if comment:
        public += b" " + comment.encode()
    return NodeAuthKey(private, public + b"\n")


def node_public_from_openssh(data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse and check an OpenSSH ECDSA public key (the kind SuperNode auth accepts)."""
    try:
        key = serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not an OpenSSH public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"SuperNode keys are ECDSA; found a {type(key).__name__}")
    return key


@dataclass(frozen=True)
class CertificatePair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsys"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(common_name: str = "fedsys CA", days: int = 3650) -> CertificatePair:
    """A self-signed CA (P-384) allowed to sign server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA384())
    )
    return CertificatePair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_server_cert(ca: CertificatePair, names: list[str], days: int = 825) -> CertificatePair:
    """A TLS server certificate for ``names`` (DNS names or IP addresses), signed by ``ca``.

    Clients check the address they dial against the subject alternative names, so every
    host name and IP the SuperNodes and the ``flwr`` CLI use must be listed.
    """
    if not names:
        raise KeyFileError("a server certificate needs at least one DNS name or IP address")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise KeyFileError("the CA key must be an ECDSA key made by `fedsys certs`")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP384R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return CertificatePair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def certificate_names(cert_pem: bytes) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (for checks and `--help`)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns: list[str] = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns + ips
