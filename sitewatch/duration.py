"""Durations as users write them (DESIGN.md section 11): 90s, 15m, 2h, 7d."""

import re

from .errors import BadInput

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")


def seconds(raw) -> float:
    """'90s', '15m', '2h', '7d' or a number of seconds -> seconds. BadInput when malformed."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw >= 0:
        return float(raw)
    match = PATTERN.fullmatch(str(raw).strip().lower()) if isinstance(raw, str) else None
    if not match:
        raise BadInput(f"duration must look like 90s, 15m, 2h or 7d, got {raw!r}")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]
