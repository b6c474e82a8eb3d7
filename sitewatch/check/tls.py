"""TLS for the check: the shared client contexts and the certificate's expiry."""

from __future__ import annotations

import datetime
import functools
import os
import ssl
import time

from urllib3.util.ssl_ import ALPN_PROTOCOLS, create_urllib3_context


class _SharedContext(ssl.SSLContext):
    """A client context shared by every check thread, never changed after it is built.

    urllib3 calls set_alpn_protocols() on the context it is given before every
    handshake. Changing a context while other threads handshake with it is the
    use-after-free of CPython issue 141012 (seen with urllib3 in production). ALPN
    is set once when the context is built; later calls (always the same list from
    urllib3) change nothing.
    """

    _alpn_set = False

    def set_alpn_protocols(self, alpn_protocols) -> None:
        if not self._alpn_set:
            super().set_alpn_protocols(alpn_protocols)
            self._alpn_set = True


@functools.lru_cache(maxsize=2)
def ssl_context(verify: bool) -> ssl.SSLContext:
    # Building a context and loading the system CAs costs ~15 ms of CPU, far too
    # much per check; one shared context per mode is safe as long as nothing
    # changes it (wrap_socket is thread-safe).
    return _build(verify)


def _build(verify: bool) -> ssl.SSLContext:
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    # Same settings and memory layout; only set_alpn_protocols differs.
    context.__class__ = _SharedContext
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    if verify:
        context.load_default_certs()
    return context


def client_context(verify: bool, cert: str, key: str | None) -> ssl.SSLContext:
    """A context presenting a client certificate (mTLS), shared by the checks that use it.

    Its own context: loading the certificate into the shared one would present it
    to every site. Cached by the files' modification times, so a renewed
    certificate is picked up without a restart.
    """
    stamps = tuple(os.stat(path).st_mtime_ns for path in (cert, key) if path)
    return _client_context(verify, cert, key, stamps)


@functools.lru_cache(maxsize=32)
def _client_context(verify: bool, cert: str, key: str | None, stamps: tuple) -> ssl.SSLContext:
    context = _build(verify)
    context.load_cert_chain(cert, key)
    return context


def days_left(sock) -> int | None:
    not_after = (sock.getpeercert() or {}).get("notAfter")
    if not_after:
        expires = ssl.cert_time_to_seconds(not_after)
    else:
        # getpeercert() is {} when the certificate was not verified (verify_tls=False):
        # read the expiry from the raw certificate instead, so it is reported either way.
        expires = der_not_after(sock.getpeercert(binary_form=True) or b"")
        if expires is None:
            return None
    return int((expires - time.time()) // 86400)


def _der_element(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `at`."""
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        count = length & 0x7F
        length = int.from_bytes(data[at:at + count], "big")
        at += count
    return tag, at, at + length


def der_not_after(cert: bytes) -> float | None:
    """notAfter (epoch seconds) of a DER X.509 certificate; None if it cannot be read.

    Certificate = SEQUENCE { tbsCertificate = SEQUENCE { [0] version OPTIONAL, serial,
    signature, issuer, validity = SEQUENCE { notBefore, notAfter }, ... }, ... }.
    """
    try:
        _, tbs, _ = _der_element(cert, 0)
        _, at, _ = _der_element(cert, tbs)                  # into tbsCertificate
        tag, _, end = _der_element(cert, at)
        if tag == 0xA0:                                     # explicit version: skip it
            at = end
        for _ in range(3):                                  # serial, signature, issuer
            at = _der_element(cert, at)[2]
        _, validity, _ = _der_element(cert, at)
        not_before_end = _der_element(cert, validity)[2]
        tag, start, end = _der_element(cert, not_before_end)
        text = cert[start:end].decode("ascii")
        if tag == 0x17:                                     # UTCTime: YYMMDDHHMMSSZ
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif tag != 0x18:                                   # not GeneralizedTime either
            return None
        moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=2)
def handshake_context(verify: bool) -> ssl.SSLContext:
    """The client context of a tls:// monitor's bare handshake: the system's CAs and hostname check
    when verifying (SSL_CERT_FILE and SSL_CERT_DIR are honoured, as for the engines). No ALPN:
    offering HTTP to a mail or LDAP server could get the handshake refused. Shared and never
    changed once built (wrap_socket is thread-safe)."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
