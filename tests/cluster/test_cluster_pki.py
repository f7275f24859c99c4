"""The throwaway PKI: certificates chain to their CA and serve real TLS to clients that verify hostnames."""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import threading

from cryptography import x509

from kresume.devtools import pki


def test_issued_serving_cert_chains_to_ca_with_ip_and_dns_sans():
    ca = pki.CertificateAuthority.create("test-ca")
    pair = ca.issue("srv", ["127.0.0.1", "kubernetes.default.svc"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.pair.cert_pem))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["kubernetes.default.svc"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_cert_carries_group_as_organization():
    pair = pki.CertificateAuthority.create().issue("admin", client=True, organization="system:masters")
    subject = x509.load_pem_x509_certificate(pair.cert_pem).subject
    assert subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_webhook_tls_serves_a_handshake_verified_by_its_ca_bundle(tmp_path):
    tls = pki.make_webhook_tls(tmp_path)
    assert base64.b64decode(tls.ca_bundle) == tls.ca_file.read_bytes() == tls.ca_pem
    assert tls.key_file.stat().st_mode & 0o077 == 0

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls.cert_file, tls.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as s:
            s.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cadata=base64.b64decode(tls.ca_bundle).decode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.recv(5) == b"hello"
    thread.join(10)
    listener.close()


def test_service_account_keys_are_a_matching_rsa_pair():
    from cryptography.hazmat.primitives import serialization

    private_pem, public_pem = pki.service_account_keys()
    private = serialization.load_pem_private_key(private_pem, None)
    assert private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_pem
    assert private.key_size == 2048
