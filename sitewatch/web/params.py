"""The web's query parameters and IDs, checked: a value we refuse raises BadParam (400) or
NotFound (404), each with a one-line message (app.py renders it as JSON or a short page)."""

import re

from starlette.requests import Request

MAX_ID = 2 ** 63 - 1
_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")      # ASCII digits only: str.isdigit() accepts '²' and '٣'
_CURSOR = re.compile(r"([du])-([0-9]{1,19})")


class BadParam(Exception):
    """A query parameter or ID we refuse: 400 with a JSON error (or a short page)."""


class NotFound(Exception):
    pass


def whole(text: str, low: int, high: int) -> int | None:
    """`text` as an int in [low, high] when it is written in ASCII digits, else None."""
    if not _WHOLE_NUMBER.fullmatch(text) or not low <= int(text) <= high:
        return None
    return int(text)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    value = whole(text, low, high)
    if value is None:
        raise BadParam(f"{name} must be a whole number from {low} to {high}")
    return value


def choice(request: Request, name: str, choices) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in choices:
        raise BadParam(f"{name} must be one of {', '.join(choices)}")
    return value


def url_id(request: Request) -> int:
    text = request.path_params["url_id"]
    value = whole(text, 1, MAX_ID)
    if value is None:
        raise NotFound(f"no URL with ID {text[:40]!r}")
    return value


def after(request: Request) -> tuple[bool, int] | None:
    """The `after` cursor of /api/v1/urls: 'd-ID' or 'u-ID' (the next_after of the page before)."""
    text = request.query_params.get("after") or None
    if text is None:
        return None
    match = _CURSOR.fullmatch(text)
    if not match or not 1 <= int(match.group(2)) <= MAX_ID:
        raise BadParam("after must be the next_after of the page before, e.g. u-1234")
    return match.group(1) == "d", int(match.group(2))


def cursor_text(cursor: tuple[bool, int] | None) -> str | None:
    return None if cursor is None else f"{'d' if cursor[0] else 'u'}-{cursor[1]}"


def search(request: Request) -> str | None:
    q = (request.query_params.get("q") or "").strip()
    if len(q) > 200:
        raise BadParam("q must be at most 200 characters")
    return q or None
