"""The `url import` file format, read by `url import`, `apply` and the write API's apply: a YAML
list of entries (URL strings or mappings of the check options) or one URL per line, each entry
validated by urlspec.make_entry before anything is written; a bad one is named with its line.
"""

import gc
import sys

import yaml

from ..errors import BadInput
from ..urlspec import UrlEntry, make_entry


def read_import(path, check_config) -> list[UrlEntry]:
    """The entries of the file at `path` ("-": standard input). BadInput when unreadable or bad."""
    # 100,000 entries make about a million small objects, none in a cycle: the cyclic collector
    # would walk them over and over (a quarter of the parse) for nothing. The command ends soon.
    gc.disable()
    try:
        if path == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            with open(path, encoding="utf-8") as f:
                text, source = f.read(), path
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text") from None
    return parse_import(text, source, check_config)


# libyaml's parser when PyYAML was built with it: about 4x faster than the pure-Python one,
# which took most of a minute on 100,000 import entries.
YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str):
    """(data, line of each top-level list item): one parse, with line numbers for error messages."""
    flat = _load_flat_list(text)
    if flat is not None:
        return flat
    loader = YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        lines = [item.start_mark.line + 1 for item in node.value] \
            if isinstance(node, yaml.SequenceNode) else []
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def _load_flat_list(text: str):
    """The import file's usual shape, a list of scalars or of flat mappings, read from the event
    stream: no node tree, which for 100,000 entries peaked at 260 MB. None for anything else
    (nesting, anchors, tags, several documents): the general path above then reads it, and
    reports its errors."""
    loader = YamlLoader(text)

    short_scalars = {}     # keys and small values ("period", "60", "true") repeat on every entry

    def scalar(event):
        if event.anchor is not None or event.tag not in (None, "!"):
            raise _NotFlat
        key = (event.value, event.implicit, event.style)
        if key in short_scalars:
            return short_scalars[key]
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        value = loader.construct_object(yaml.ScalarNode(tag, event.value, style=event.style))
        if len(event.value) <= 16:       # URLs are longer and unique: not worth keeping
            short_scalars[key] = value
        return value

    try:
        events = iter(loader.get_event, None)   # get_event returns None after StreamEnd
        if not isinstance(next(events), yaml.StreamStartEvent) \
                or not isinstance(next(events), yaml.DocumentStartEvent):
            return None
        event = next(events)
        if not isinstance(event, yaml.SequenceStartEvent) or event.anchor is not None \
                or event.tag not in (None, "!"):
            return None
        data, lines = [], []
        for event in events:
            if isinstance(event, yaml.SequenceEndEvent):
                break
            lines.append(event.start_mark.line + 1)
            if isinstance(event, yaml.ScalarEvent):
                data.append(scalar(event))
            elif isinstance(event, yaml.MappingStartEvent) and event.anchor is None \
                    and event.tag in (None, "!"):
                item = {}
                for key in events:
                    if isinstance(key, yaml.MappingEndEvent):
                        break
                    value = next(events)
                    if not isinstance(key, yaml.ScalarEvent) or not isinstance(value, yaml.ScalarEvent):
                        return None
                    item[scalar(key)] = scalar(value)
                data.append(item)
            else:
                return None
        if not isinstance(next(events), yaml.DocumentEndEvent) or not isinstance(next(events), yaml.StreamEndEvent):
            return None
        return data, lines
    except (_NotFlat, yaml.YAMLError, StopIteration):
        return None
    finally:
        loader.dispose()


class _NotFlat(Exception):
    pass


def parse_import(text: str, source: str, check_config) -> list[UrlEntry]:
    """Entries from an import file: a YAML list (of mappings or URL strings), or one URL per line.

    All entries are validated before anything is written; the first bad one is named.
    """
    stripped = [line.strip() for line in text.splitlines()]
    meaningful = [line for line in stripped if line and not line.startswith("#")]
    if meaningful and not meaningful[0].startswith(("-", "[", "{")) and "://" in meaningful[0] \
            and ": " not in meaningful[0]:      # "[" "{": JSON (the write API's apply), a YAML flow list
        # One URL per line (YAML would fold the lines into one string).
        items = []
        for number, line in enumerate(stripped, start=1):
            if line and not line.startswith("#"):
                items.append((f"line {number}", {"url": line}))
    else:
        try:
            data, lines = load_yaml(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            why = " ".join(str(getattr(e, "problem", None) or e).split())   # one line
            raise BadInput(f"{source}: malformed YAML{where}: {why}") from None
        except RecursionError:
            # PyYAML parses recursively: a few thousand "[" exhaust the stack (was exit 1, a bug).
            raise BadInput(f"{source}: malformed YAML: nested too deeply") from None
        if data is None:
            data = []
        if not isinstance(data, list):
            raise BadInput(f"{source}: expected a YAML list of URL entries or one URL per line")
        items = []
        for index, item in enumerate(data):
            where = f"entry {index + 1}" + (f" (line {lines[index]})" if index < len(lines) else "")
            if isinstance(item, str):
                item = {"url": item}
            if not isinstance(item, dict):
                raise BadInput(f"{source}: {where}: must be a URL or a mapping with a 'url' key")
            items.append((where, {str(k).replace("-", "_"): v for k, v in item.items()}))
    entries, seen = [], {}
    for where, options in items:
        try:
            entry = make_entry(options, check_config)
        except BadInput as e:
            raise BadInput(f"{source}: {where}: {e}", field=e.field) from None
        if entry.identity in seen:
            raise BadInput(f"{source}: {where}: {entry.shown} is already listed "
                           f"at {seen[entry.identity]}")
        seen[entry.identity] = where
        entries.append(entry)
    return entries
