"""User regexes: RE2 (linear time, so no pattern can hang a checker), one set of options.

Validation (`url add`, assertions) and checking compile through the very same function.
"""

import functools

import re2

REGEX_MAX_MEM = 8 << 20          # RE2's program memory budget for one user regex


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str):
    """Compile a user regex with RE2.

    Cached because checkers run the same few patterns over and over. Raises re2.error.
    """
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False      # RE2 would print to stderr; callers say why themselves
    return re2.compile(pattern, options)


@functools.lru_cache(maxsize=1024)
def compile_regex_utf8(pattern: str):
    """The same regex compiled for UTF-8 bytes: searching valid UTF-8 bytes with it gives the
    verdict of searching their decoded text with compile_regex(pattern) (the str form encodes
    the text back to these very bytes for RE2), without the decoding, re-encoding and offset
    mapping, which cost ~0.3 ms on a 50 KB body. Raises re2.error as compile_regex does."""
    compile_regex(pattern)          # an invalid pattern fails exactly as it does for the str form
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False
    return re2.compile(pattern.encode("utf-8"), options)


def search_bytes(pattern: str, data: bytes) -> bool:
    """Whether the user regex `pattern` matches somewhere in `data` (a body, what a tcp:// check
    read), with Unicode semantics. Raises re2.error for an invalid pattern.

    re2 on bytes works in UTF-8 mode where `.` does not match an invalid byte, so "caf.*text"
    would miss a Latin-1 body: decoding with replacement keeps every byte matchable (as
    U+FFFD). A valid UTF-8 body (most are; ASCII is checked in C at no cost) decodes to text
    that encodes back to the same bytes, so it is searched as bytes: the same verdict, without
    pyre2's decoding, re-encoding and offset mapping in Python."""
    if data.isascii() or _valid_utf8(data):
        return compile_regex_utf8(pattern).search(data) is not None
    return compile_regex(pattern).search(data.decode("utf-8", errors="replace")) is not None


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
