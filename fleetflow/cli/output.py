"""What the CLI prints: kubectl-style tables, or the same objects as JSON or YAML for scripts.

A command describes its objects once: columns for the table, and a dict per object for JSON and
YAML. ``-o table`` (the default) and ``-o wide`` print the columns (wide adds those marked wide),
``-o json`` and ``-o yaml`` the dicts: a list as ``{"kind": "List", "items": [...]}``, one object
as itself, as ``kubectl get -o json`` does. Progress and errors go to stderr, so stdout holds the
result alone and ``-o json`` output always parses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

TABLE, WIDE, JSON, YAML = "table", "wide", "json", "yaml"
FORMATS = (TABLE, WIDE, JSON, YAML)


def add_output_option(parser: argparse.ArgumentParser) -> None:
    """``-o/--output table|wide|json|yaml`` on a list or get command."""
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=TABLE,
        metavar="|".join(FORMATS),
        help="a table (default), a table with more columns, or the objects as JSON or YAML",
    )


@dataclass(frozen=True)
class Column(Generic[T]):
    """One table column: its header and how to read its cell from an object."""

    header: str
    value: Callable[[T], object]
    wide: bool = False  # shown with -o wide only


def cell(value: object) -> str:
    """A cell as kubectl prints it: booleans in lower case, None empty, a mapping as k=v,k=v."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "<none>"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, as ``kubectl get`` prints them."""
    cells = [[cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [list(headers), *cells]]
    return "\n".join(line.rstrip() for line in lines)


def serialize(data: object, output: str) -> str:
    """``data`` as JSON (indented, keys in the order given) or YAML (block style)."""
    if output == JSON:
        return json.dumps(data, indent=2)
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False)).rstrip("\n")


def render_list(
    items: Iterable[T],
    output: str,
    columns: Sequence[Column[T]],
    as_dict: Callable[[T], dict[str, Any]],
    empty: str,
) -> str:
    """A list in the chosen form; ``empty`` is the table form's line for no objects."""
    found = list(items)
    if output in (JSON, YAML):
        return serialize({"kind": "List", "items": [as_dict(i) for i in found]}, output)
    if not found:
        return empty
    shown = [c for c in columns if output == WIDE or not c.wide]
    return table([c.header for c in shown], [[c.value(i) for c in shown] for i in found])


def render_object(obj: dict[str, Any], output: str, fields: Sequence[tuple[str, object]]) -> str:
    """One object: as JSON or YAML, else ``fields`` as aligned ``Key: value`` lines."""
    if output in (JSON, YAML):
        return serialize(obj, output)
    width = max((len(k) for k, _ in fields), default=0) + 2
    return "\n".join(f"{key + ':':<{width}}{cell(value)}".rstrip() for key, value in fields)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
