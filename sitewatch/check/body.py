"""Reading a response body within the cap, decoding gzip and deflate ourselves.

urllib3's decoders buffer their raw input until output appears: a deflate stream
of endless empty blocks grows that buffer, with quadratic copying, inside one
read(), so no cap on the decoded size ever fires. They also accept a gzip or
deflate stream that stops before its end. Here the raw bytes (after chunked
framing) are read in chunks and inflated with zlib's `max_length`, so memory is
bounded by the chunk size at every stage, the raw size is capped too, and a
stream that never reached its end is reported as truncated.
"""

from __future__ import annotations

import zlib

# The encodings we offer and decode. Others (br, zstd) are not offered; a server
# sending them anyway gets its body matched as sent.
ACCEPT_ENCODING = "gzip, deflate"
CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The decoded body, or the raw bytes behind it, passed the cap."""


class BadEncoding(Exception):
    """Content-Encoding data that cannot be decoded or that ends early."""


GZIP_MAGIC = b"\x1f\x8b"


class _Inflater:
    """One gzip or deflate layer, producing at most `max_length` bytes per call."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        self._buf = b""  # input not yet consumed: zlib's unconsumed tail, or bytes after a gzip member
        self._ended = False  # the current stream (gzip member) reached its end
        self.fed = False

    def decode(self, data: bytes, max_length: int) -> bytes:
        self.fed = self.fed or bool(data)
        data, self._buf = self._buf + data, b""
        if self._obj is None:  # deflate: zlib-wrapped (RFC 1950) or raw (RFC 1951)?
            if len(data) < 2:
                self._buf = data
                return b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._ended:
            if self.encoding == "gzip" and data[:2] == GZIP_MAGIC:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # concatenated members are one body
                self._ended = False
            else:
                if self.encoding == "gzip" and len(data) < 2:
                    self._buf = data  # maybe the start of another member
                return b""  # anything else after the end is ignored, as urllib3 does
        try:
            out = self._obj.decompress(data, max_length)
        except zlib.error:
            raise BadEncoding(f"cannot decode the body (bad {self.encoding} data)") from None
        if self._obj.eof:
            self._ended = True
            self._buf = self._obj.unused_data if self.encoding == "gzip" else b""
        else:
            self._buf = self._obj.unconsumed_tail
        return out

    @property
    def pending(self) -> bool:
        """Input is waiting that needs no more data to make progress."""
        if self._ended:
            return self._buf[:2] == GZIP_MAGIC
        return bool(self._buf) and self._obj is not None

    def finish(self) -> None:
        if self.fed and not self._ended:
            raise BadEncoding(f"the {self.encoding} body ends early (truncated)")


class BodyDecoder:
    """A body pushed in raw pieces (after any chunked framing), decoded and capped as it comes.

    Engines that read (urllib3) and engines that are written to (libcurl's write
    callback) share it, so both cap and decode the same way.
    """

    def __init__(self, content_encoding: str, limit: int) -> None:
        self.layers = _layers(content_encoding)
        self.limit = limit
        # A legitimate compressed body is at most slightly larger than its decoded form.
        self.raw_limit = 2 * limit + CHUNK_BYTES
        self.raw_total = 0
        self.body = bytearray()

    def _keep(self, piece: bytes) -> None:
        self.body.extend(piece)
        if len(self.body) > self.limit:
            raise BodyTooLarge(f"body exceeds {self.limit} bytes")

    def feed(self, raw: bytes) -> None:
        """BodyTooLarge or BadEncoding as soon as the body is known to be either."""
        self.raw_total += len(raw)
        if self.layers and self.raw_total > self.raw_limit:
            raise BodyTooLarge(f"compressed body exceeds {self.raw_limit} bytes")
        _push(self.layers, 0, raw, self._keep)

    def finish(self) -> bytearray:
        """The decoded body, once every raw byte was fed; BadEncoding when a stream ended early."""
        for layer in self.layers:
            layer.finish()
        return self.body  # no copy: the caller only decodes it for the regex


def read_body(response, limit: int) -> bytearray:
    """The decoded body of a urllib3 response; BodyTooLarge past `limit` decoded bytes."""
    decoder = BodyDecoder(response.headers.get("Content-Encoding", ""), limit)
    while True:
        raw = response.read(CHUNK_BYTES, decode_content=False)
        if not raw:
            return decoder.finish()
        decoder.feed(raw)


def _layers(header: str) -> list[_Inflater]:
    """Decoders for a Content-Encoding header, outermost (last applied) first."""
    names = [name.strip().lower() for name in header.split(",")]
    names = ["gzip" if name == "x-gzip" else name for name in names if name and name != "identity"]
    if any(name not in ("gzip", "deflate") for name in names):
        return []  # not ours to decode: match the bytes as sent
    return [_Inflater(name) for name in reversed(names)]


def _push(layers: list[_Inflater], index: int, data: bytes, keep) -> None:
    """Feed `data` to layer `index` and its output onward, a bounded piece at a time."""
    if index == len(layers):
        if data:
            keep(data)
        return
    layer = layers[index]
    _push(layers, index + 1, layer.decode(data, CHUNK_BYTES), keep)
    while layer.pending:
        _push(layers, index + 1, layer.decode(b"", CHUNK_BYTES), keep)
