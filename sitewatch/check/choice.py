"""Which engine checks: `check.engine` (auto, curl, urllib3).

Apart from engine.py (the boundary every engine imports), so that the boundary never
imports an engine: engine.py <-> curl_engine.py would be an import cycle.
"""

from .engine import Engine

ENGINE_CHOICES = ("auto", "curl", "urllib3")


def curl_available() -> bool:
    try:
        import pycurl  # noqa: F401
    except ImportError:
        return False
    return True


def engine_named(name: str = "auto") -> Engine:
    """The engine for a `check.engine` value: `auto` is curl when pycurl imports, else urllib3."""
    if name not in ENGINE_CHOICES:
        raise ValueError(f"unknown check engine {name!r} (choose from {', '.join(ENGINE_CHOICES)})")
    if name == "curl" or (name == "auto" and curl_available()):
        try:
            from .curl_engine import CURL
        except ImportError:
            if name == "curl":
                raise
        else:
            return CURL
    from .urllib3_engine import URLLIB3
    return URLLIB3
