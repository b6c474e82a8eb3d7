"""Real servers for the tcp:// and tls:// monitor kinds (issue 20), on 127.0.0.1, started by tests.

StreamServer runs one handler per accepted connection on a thread; with an SSL context it
shakes hands first. `certificates` makes a test CA and a server certificate for 127.0.0.1
that expires in a given number of days, with `cryptography` (as tests/test_requests.py does).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading


class StreamServer:
    """A TCP (or TLS) server on 127.0.0.1: `handler(conn, server)` per connection, on a thread."""

    def __init__(self, handler, context: ssl.SSLContext | None = None) -> None:
        self.handler, self.context = handler, context
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closing = threading.Event()
        self.accepted = 0
        self.received: list[bytes] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme: str = "tcp", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}"

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            conn.settimeout(30)
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
                self._conns.append(conn)
            self.handler(conn, self)
        except OSError:
            pass        # the client gave up (a refused certificate, a deadline): its business
        finally:
            conn.close()

    def close(self) -> None:
        self.closing.set()
        self.sock.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass


def read_line(conn) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < 4096:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def ping_pong(conn, server) -> None:
    """PING -> PONG, anything else -> WHAT."""
    line = read_line(conn)
    server.received.append(line)
    conn.sendall(b"PONG\r\n" if line.startswith(b"PING") else b"WHAT\r\n")


def echo(conn, server) -> None:
    """Sends the line back."""
    line = read_line(conn)
    server.received.append(line)
    conn.sendall(line)


def silent(conn, server) -> None:
    """Accepts, reads what comes, never answers; holds the connection until the server closes."""
    conn.settimeout(0.2)
    while not server.closing.is_set():
        try:
            if not conn.recv(1024):
                return
        except TimeoutError:
            continue


def chatter(conn, server) -> None:
    """Sends 'x' for ever (never what anyone expects)."""
    try:
        while not server.closing.is_set():
            conn.sendall(b"x" * 512)
    except OSError:
        return


def handshake_only(conn, server) -> None:
    """The TLS handshake was done by StreamServer; wait for the client to hang up."""
    silent(conn, server)


def certificates(directory, days_left: float) -> dict:
    """{"ca": path, "server": (cert path, key path)}: a test CA and a certificate for 127.0.0.1
    signed by it that expires in `days_left` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sitewatch kinds test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days_left))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return {"ca": str(directory / "ca.pem"),
            "server": (str(directory / "server.pem"), str(directory / "server.key"))}


def tls_context(paths: dict) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*paths["server"])
    return context
