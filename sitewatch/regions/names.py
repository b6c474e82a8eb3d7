"""Region names and down_when (DESIGN.md section 12, Regions): what the config, the CLI and
import/apply accept. Pure: the producer, the claim and the quorum live in SQL (db/queries.sql,
db/migrations/regions.sql); confirmation checks in regions/confirm.py and 0016_region_confirm.sql."""

import re

from ..errors import BadInput

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
DOWN_WHEN = re.compile(r"any|all|majority|[1-9][0-9]{0,2}")
MAX_REGIONS = 32


def region_problem(name) -> str | None:
    """Why `name` is not a region name, or None ('' is allowed: no region)."""
    if not isinstance(name, str) or (name and not NAME.fullmatch(name)):
        return "must be 1-32 lowercase letters, digits, '_', '.' or '-', starting with a letter or digit"
    return None


def parse_regions(raw) -> list[str]:
    """--regions eu,us,ap (or a YAML list): distinct region names in the order given; '' or [] = none."""
    if raw is None:
        return []
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",")]
        items = [] if items == [""] else items
    elif isinstance(raw, list):
        items = raw
    else:
        raise BadInput(f"regions must be a list of region names (eu,us,ap), got {raw!r}")
    names = []
    for item in items:
        if item == "":
            raise BadInput(f"regions lists an empty name in {raw!r}")
        problem = region_problem(item)
        if problem:
            raise BadInput(f"region {problem}, got {item!r}")
        if item in names:
            raise BadInput(f"regions lists {item!r} twice")
        names.append(item)
    if len(names) > MAX_REGIONS:
        raise BadInput(f"at most {MAX_REGIONS} regions, got {len(names)}")
    return names


def down_when_problem(value) -> str | None:
    if not isinstance(value, str) or not DOWN_WHEN.fullmatch(value):
        return "must be any, all, majority or a number of regions (1-999)"
    return None


def parse_down_when(raw) -> str | None:
    """--down-when any|all|majority|N; None (or '', on url update) means alerts.down_when."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    value = str(raw).strip().lower() if not isinstance(raw, bool) else repr(raw)
    problem = down_when_problem(value)
    if problem:
        raise BadInput(f"down when {problem}, got {raw!r}")
    return value
