"""A throwaway self-signed serving certificate, for ``kresume operator`` started without TLS files.

Development only: the chart always mounts a real pair (its generated CA, or cert-manager). One self-signed
certificate (ECDSA P-256, ``CA:TRUE``, SANs for the given hosts, valid from 1 hour ago for 30 days) is both the
serving certificate and the ``caBundle`` a ``MutatingWebhookConfiguration`` must carry: Go's TLS client (the
API server's webhook client) and Python's ``ssl`` accept a leaf that is itself in the trusted roots.

Made with ``cryptography`` (a dependency of the operator), not with kopf's generator, which needs the
``certbuilder``/``oscrypto`` extras.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Hosts the development certificate is valid for.
DEV_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost")
#: Certificates are valid from BACKDATE ago (clock skew) for VALIDITY.
VALIDITY = datetime.timedelta(days=30)
BACKDATE = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class ServingPair:
    """``cert_file`` (PEM; also the CA bundle to trust) and ``key_file`` (PEM PKCS#8, mode 0600)."""

    cert_file: Path
    key_file: Path


def san(host: str) -> x509.GeneralName:
    """A subjectAltName entry: an IP address for an IP literal, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def self_signed_pair(directory: Path, hosts: Sequence[str] = DEV_HOSTS) -> ServingPair:
    """Write ``dev-webhook.crt`` and ``dev-webhook.key`` for ``hosts`` into ``directory`` (created); return them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kresume-operator-dev")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=False, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san(h) for h in hosts]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "dev-webhook.crt", directory / "dev-webhook.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ServingPair(cert_file, key_file)
