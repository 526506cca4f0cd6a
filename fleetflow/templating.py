"""Render Kubernetes manifests from Jinja2 templates, safely.

This is the only module that imports jinja2. Templates come from ``fleetflow/templates`` (package
data, so a plain ``pip install`` has them) or from a directory the user names (argument, else
``FLEETFLOW_TEMPLATES``); a user directory is searched first, so it can override a single
template and still use the defaults for the rest.

Values come from labels and names that other people choose, so a value must never be able to
change the structure of the YAML it lands in. Every ``{{ expression }}`` is therefore emitted as
one complete YAML node: a string becomes a double-quoted scalar escaped by PyYAML's own emitter,
numbers, booleans and null stay typed, lists and mappings become flow collections of such nodes.
The consequence for template authors: an expression must be a whole value, so build compound
strings inside it (``{{ "cluster-" ~ cluster }}``, not ``cluster-{{ cluster }}``).

The environment is sandboxed (no ``''.__class__`` escapes) and undefined variables are errors.
Every failure is a :class:`TemplateError` naming the template file, on one line. Messages
never quote rendered output, which may hold credentials.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from fleetflow.errors import UsageError

DEFAULT_TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"  # package data
TEMPLATE_DIR_ENV = "FLEETFLOW_TEMPLATES"


class TemplateError(UsageError):
    """A template cannot be found, parsed or rendered, or renders something unusable."""


def yaml_value(value: object) -> str:
    """``value`` as one YAML flow node on one line, which no content can break out of."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined (and the sandbox's unsafe-attribute marker) raise here
        raise TypeError("undefined value")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("a non-finite float cannot be rendered")
        return _emit(value, None)
    if isinstance(value, str):
        return _emit(str(value), '"')
    if isinstance(value, Mapping):
        items = (f"{_key(k)}: {yaml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes | bytearray):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    raise TypeError(f"a value of type {type(value).__name__} cannot be rendered")


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a mapping key of type {type(key).__name__} cannot be rendered")
    return yaml_value(key)


def _emit(value: str | float, style: str | None) -> str:
    text = yaml.safe_dump(value, default_style=style, width=math.inf, allow_unicode=True)
    text = text.removesuffix("...\n").rstrip("\n")
    if "\n" in text:  # never expected: width is unbounded and line breaks are escaped
        raise TypeError("value does not fit on one line")
    return text


def _b64encode(value: object) -> str:
    """For Secret ``data``: base64 of the UTF-8 text of ``value``."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, str | int) and not isinstance(value, bool):
        return base64.b64encode(str(value).encode()).decode("ascii")
    raise TypeError(f"b64encode needs a string, not {type(value).__name__}")


class TemplateSet:
    """The templates of one directory (plus the defaults behind it), ready to render."""

    def __init__(self, template_dir: Path | None = None) -> None:
        self.dirs = _search_path(template_dir)
        self._env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.dirs]),
            undefined=jinja2.StrictUndefined,
            finalize=yaml_value,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._env.filters["b64encode"] = _b64encode
        # Jinja's globals (namespace, cycler, joiner, lipsum, dict) would shadow values of the same name
        # when they are missing: `namespace | default(...)` must see an undefined `namespace`.
        self._env.globals = {"range": self._env.globals["range"]}

    def names(self) -> list[str]:
        """Every template name (``*.yaml.j2``) on the search path."""
        return sorted(n for n in self._env.list_templates() if n.endswith(".yaml.j2"))

    def render_text(self, name: str, values: Mapping[str, object]) -> str:
        """The rendered YAML text of template ``name``."""
        return self._render(name, values)[1]

    def render(self, name: str, values: Mapping[str, object]) -> list[dict[str, Any]]:
        """Render template ``name`` and parse it into Kubernetes objects (empty documents dropped)."""
        label, text = self._render(name, values)
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = exc.problem or "cannot be parsed"
            raise TemplateError(f"template {label}: output is not valid YAML{where}: {problem}") from None
        except yaml.YAMLError:
            raise TemplateError(f"template {label}: output is not valid YAML") from None
        for index, document in enumerate(documents, start=1):
            problem = _object_problem(document)
            if problem:
                raise TemplateError(
                    f"template {label}: document {index} is not a Kubernetes object: {problem}"
                )
        return documents

    def _render(self, name: str, values: Mapping[str, object]) -> tuple[str, str]:
        """(the template's file name, its rendered text)."""
        try:
            template = self._env.get_template(name)
        except jinja2.TemplateNotFound:
            where = ", ".join(str(d) for d in self.dirs)
            raise TemplateError(f"template {name} not found in {where}") from None
        except jinja2.TemplateSyntaxError as exc:
            label = exc.filename or name
            raise TemplateError(
                f"template {label} line {exc.lineno}: syntax error: {_one_line(exc.message or '')}"
            ) from exc
        label = template.filename or name
        try:
            return label, template.render(dict(values))
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"template {label}{_line(exc, label)}: {_one_line(exc.message or '')}"
            ) from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(
                f"template {label}{_line(exc, label)}: blocked by the sandbox: {_one_line(str(exc))}"
            ) from exc
        except TypeError as exc:
            raise TemplateError(f"template {label}{_line(exc, label)}: {_one_line(str(exc))}") from None
        except Exception as exc:
            # Other messages may quote values (credentials): name the exception type only.
            raise TemplateError(
                f"template {label}{_line(exc, label)}: {type(exc).__name__} while rendering"
            ) from None


def render(
    template_name: str, values: Mapping[str, object], template_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Render ``template_name`` with ``values``; see :class:`TemplateSet`."""
    return TemplateSet(template_dir).render(template_name, values)


def _search_path(template_dir: Path | None) -> tuple[Path, ...]:
    if template_dir is None:
        env = os.environ.get(TEMPLATE_DIR_ENV)
        if not env:
            return (DEFAULT_TEMPLATE_DIR,)
        template_dir, source = Path(env).expanduser(), TEMPLATE_DIR_ENV
    else:
        source = "template directory"
    if not template_dir.is_dir():
        raise TemplateError(f"{source} {template_dir} is not a directory")
    resolved = template_dir.resolve()
    if resolved == DEFAULT_TEMPLATE_DIR:
        return (DEFAULT_TEMPLATE_DIR,)
    return (resolved, DEFAULT_TEMPLATE_DIR)


def _object_problem(document: object) -> str:
    if not isinstance(document, dict):
        return f"a {type(document).__name__}, not a mapping"
    for key in ("apiVersion", "kind"):
        if not isinstance(document.get(key), str) or not document[key]:
            return f"missing {key}"
    metadata = document.get("metadata")
    if not isinstance(metadata, dict):
        return "missing metadata"
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return "missing metadata.name"
    return ""


def _line(exc: BaseException, filename: str) -> str:
    """`` line N`` of the innermost template frame in ``exc``'s traceback (jinja2 rewrites it so)."""
    lineno = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f" line {lineno}" if lineno else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())
