"""`tls://HOST:PORT` monitors: one TLS handshake, the certificate verified, its days left recorded.

Up means the handshake completed within the deadline with a certificate that verifies for
HOST (`verify-tls` false: any certificate). The days left on the certificate are recorded
whenever one was presented, also when it failed verification (an expired one above all):
then the handshake is made once more without verifying, within the same deadline, only to
read it, as the urllib3 engine does. `cert_days` assertions judge it: `cert_days > 14` fails a
certificate that expires in 3 days as `assertion`, while the check itself is up.
"""

from __future__ import annotations

import ssl

from . import tls
from .address import normalise_host_port
from .connect import connect
from .engine import TLS_HANDSHAKE, Failure, Request, Response
from .stream import Stream

SCHEME = "tls"
SUBJECTS = frozenset({"cert_days", "response_time"})


def normalise(url: str) -> str:
    return normalise_host_port(url, SCHEME)


def fetch(request: Request) -> Response:
    return Stream.run(request, _handshake)


def _handshake(stream: Stream) -> Response:
    sock = stream.open()
    stream.stage = TLS_HANDSHAKE
    try:
        context = tls.handshake_context(stream.request.verify_tls)
        try:
            # The socket's timeout (the deadline's time left) bounds the whole handshake.
            with context.wrap_socket(sock, server_hostname=stream.host) as tls_sock:
                stream.watch(tls_sock)
                stream.mark("tls")
                stream.cert_days_left = tls.days_left(tls_sock)
                stream.watch(None)
        except ssl.SSLCertVerificationError as exc:
            stream.cert_days_left = _days_left_unverified(stream)
            raise Failure("tls", f"TLS with {stream.host} failed: certificate verify failed: "
                                 f"{exc.verify_message}") from None
        return stream.response()
    finally:
        stream.watch(None)
        sock.close()


def _days_left_unverified(stream: Stream) -> int | None:
    """Days left on a certificate that failed verification: a second handshake, not verifying."""
    sock = None
    try:
        sock = connect([stream.peer], None, stream.deadline, stream.request.source_address)
        sock.settimeout(stream.deadline.left())
        with tls.handshake_context(False).wrap_socket(sock, server_hostname=stream.host) as tls_sock:
            return tls.days_left(tls_sock)
    except (OSError, ValueError):   # ssl.SSLError is an OSError
        return None                 # the verification error is what gets reported
    finally:
        if sock is not None:
            sock.close()
