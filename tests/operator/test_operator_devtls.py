"""The operator's development certificate (no TLS files given) is a working serving pair and its own CA."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from kresume.operator import devtls


def handshake(pair: devtls.ServingPair, host: str) -> str:
    """A TLS handshake over loopback: server with ``pair``, client trusting only ``pair.cert_file``, checking
    ``host``. Returns the version negotiated; raises ``ssl.SSLCertVerificationError`` on a mismatch."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pair.cert_file, pair.key_file)
    client_ctx = ssl.create_default_context(cafile=str(pair.cert_file))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                with client_ctx.wrap_socket(sock, server_hostname=host) as tls:
                    version = str(tls.version())
                    tls.send(b"x")
                    return version
        finally:
            thread.join(5)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_dev_pair_verifies_for_its_hosts_with_itself_as_the_ca(tmp_path: Path, host: str):
    pair = devtls.self_signed_pair(tmp_path)
    assert pair.key_file.stat().st_mode & 0o777 == 0o600
    assert handshake(pair, host).startswith("TLS")


def test_dev_pair_is_refused_for_another_host(tmp_path: Path):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(devtls.self_signed_pair(tmp_path), "kresume-webhook.kresume-system.svc")
