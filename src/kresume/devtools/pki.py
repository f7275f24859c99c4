"""Throwaway PKI for local control planes and webhook servers, made with ``cryptography``.

A test cluster needs: a CA, a serving certificate for kube-apiserver (SANs for 127.0.0.1 and the in-cluster
``kubernetes.default.svc`` names, as ``../shared/k8s/envtest.sh`` issues), a key pair for signing ServiceAccount
tokens, and, for admission tests, a serving certificate for a webhook server on 127.0.0.1 whose CA goes into the
webhook configuration's ``caBundle``.

TLS keys are ECDSA P-256 (milliseconds to generate; Go's crypto/tls and Python's ssl accept them). The
ServiceAccount signing key is RSA 2048, the key type kube-apiserver documents for
``--service-account-signing-key-file`` (RS256). Certificates are valid from 1 hour ago (clock skew) for 30 days.
Nothing here is meant for production.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kresume.operator.devtls import BACKDATE, VALIDITY
from kresume.operator.devtls import san as _san

#: Names kube-apiserver answers to from inside and outside a cluster (envtest.sh's apiserver SANs).
APISERVER_HOSTS: tuple[str, ...] = (
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.crt`` and ``<name>.key`` (mode 0600) into ``directory``; return both paths."""
        directory.mkdir(parents=True, exist_ok=True)
        crt, key = directory / f"{name}.crt", directory / f"{name}.key"
        crt.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return crt, key


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertificateAuthority:
    """A self-signed CA that issues serving and client certificates.

    Create with :meth:`create`; :attr:`pair` holds the CA certificate and key as PEM.
    """

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self._cert = cert
        self._key = key
        self.pair = KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    @classmethod
    def create(cls, common_name: str = "kresume-test-ca") -> CertificateAuthority:
        """Generate a fresh CA (basicConstraints CA:TRUE, keyCertSign) named ``common_name``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    def issue(
        self,
        common_name: str,
        hosts: Sequence[str] = (),
        *,
        client: bool = False,
        organization: str | None = None,
    ) -> KeyPair:
        """Issue a leaf certificate signed by this CA.

        ``hosts`` become subjectAltNames (IP literals as IP SANs, others as DNS names); ``client=True`` makes a
        clientAuth certificate (``organization`` is then the Kubernetes group, e.g. ``system:masters``), otherwise
        a serverAuth one. Go's TLS stack (kube-apiserver's webhook client) ignores the CN and needs a SAN that
        matches the URL's host.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def service_account_keys() -> tuple[bytes, bytes]:
    """Return ``(private_pem, public_pem)`` of a fresh RSA 2048 key for signing ServiceAccount tokens.

    kube-apiserver reads the private key via ``--service-account-signing-key-file`` and the public key via
    ``--service-account-key-file``; kube-controller-manager signs legacy token Secrets with the private key.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_pem(key), public


@dataclass(frozen=True)
class WebhookTLS:
    """Files and values a test webhook server and its webhook configuration need.

    ``cert_file``/``key_file`` go to the server (e.g. ``ssl.SSLContext.load_cert_chain``); ``ca_bundle`` is the
    base64 of the CA PEM, the value of ``webhooks[].clientConfig.caBundle``; ``ca_file`` is that CA for clients.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    ca_pem: bytes

    @property
    def ca_bundle(self) -> str:
        """Base64 (standard alphabet, no newlines) of the CA PEM, as admissionregistration/v1 expects."""
        return base64.b64encode(self.ca_pem).decode("ascii")


def make_webhook_tls(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> WebhookTLS:
    """Create a new CA and a serving certificate for ``hosts`` in ``directory``; return the file paths.

    Writes ``webhook-ca.crt``, ``webhook.crt`` and ``webhook.key``. The CA is separate from any control plane's
    CA, as a real webhook's would be. Use an IP host (``https://127.0.0.1:PORT/path``) in ``clientConfig.url``:
    kube-apiserver verifies the certificate's IP SAN against it.
    """
    ca = CertificateAuthority.create("kresume-webhook-ca")
    cert_file, key_file = ca.issue("kresume-webhook", hosts).write(Path(directory), "webhook")
    ca_file = Path(directory) / "webhook-ca.crt"
    ca_file.write_bytes(ca.pair.cert_pem)
    return WebhookTLS(cert_file=cert_file, key_file=key_file, ca_file=ca_file, ca_pem=ca.pair.cert_pem)
