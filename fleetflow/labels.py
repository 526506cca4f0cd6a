"""Kubernetes label syntax: validation, ``k=v,...`` parsing, kubectl-style edits, selectors.

The rules are Kubernetes' own (apimachinery's validation): a key is an optional DNS-1123
subdomain prefix (at most 253 characters) and ``/``, then a name of at most 63 characters
that starts and ends alphanumeric with ``-``, ``_``, ``.`` inside; a value is empty or follows
the name rule. Errors say which label is wrong and why, on one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleetflow.errors import UsageError

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_dns_label(name: str, what: str = "name") -> str:
    if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
        raise UsageError(
            f"invalid {what} {name!r}: must be a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return name


def validate_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise UsageError(f"invalid label key {key!r}: prefix must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid label key {key!r}: name part must be 1-63 characters, alphanumeric at both "
            "ends, with '-', '_' or '.' inside"
        )
    return key


def validate_value(key: str, value: str) -> str:
    if value and (len(value) > 63 or not _NAME.fullmatch(value)):
        raise UsageError(
            f"invalid value {value!r} for label {key!r}: at most 63 characters, alphanumeric at "
            "both ends, with '-', '_' or '.' inside"
        )
    return value


def validate(labels: Mapping[str, str]) -> dict[str, str]:
    return {validate_key(k): validate_value(k, v) for k, v in labels.items()}


def parse(text: str) -> dict[str, str]:
    """``"type=services,tier=db"`` -> ``{"type": "services", "tier": "db"}``; empty text -> ``{}``."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid label {item!r}: expected key=value")
        labels[validate_key(key.strip())] = validate_value(key, value.strip())
    return labels


@dataclass(frozen=True)
class LabelEdit:
    """kubectl-style edit: ``k=v`` sets, ``k-`` removes."""

    set: dict[str, str]
    remove: frozenset[str]

    @classmethod
    def parse(cls, args: Iterable[str]) -> LabelEdit:
        to_set: dict[str, str] = {}
        to_remove: set[str] = set()
        for arg in args:
            if arg.endswith("-") and "=" not in arg:
                to_remove.add(validate_key(arg[:-1]))
            elif "=" in arg:
                key, _, value = arg.partition("=")
                to_set[validate_key(key)] = validate_value(key, value)
            else:
                raise UsageError(f"invalid label argument {arg!r}: use key=value to set or key- to remove")
        both = to_remove & to_set.keys()
        if both:
            raise UsageError(f"label {sorted(both)[0]!r} is both set and removed")
        if not to_set and not to_remove:
            raise UsageError("no label changes given: use key=value to set or key- to remove")
        return cls(to_set, frozenset(to_remove))

    def applied_to(self, labels: Mapping[str, str]) -> dict[str, str]:
        result = {k: v for k, v in labels.items() if k not in self.remove}
        result.update(self.set)
        return result


@dataclass(frozen=True)
class LabelDiff:
    added: dict[str, str]
    changed: dict[str, dict[str, str]]
    removed: dict[str, str]

    @classmethod
    def between(cls, old: Mapping[str, str], new: Mapping[str, str]) -> LabelDiff:
        return cls(
            added={k: v for k, v in sorted(new.items()) if k not in old},
            changed={
                k: {"from": old[k], "to": v} for k, v in sorted(new.items()) if k in old and old[k] != v
            },
            removed={k: v for k, v in sorted(old.items()) if k not in new},
        )

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value


@dataclass(frozen=True)
class Selector:
    """An equality-based label selector, as ``kubectl -l`` takes: ``a=b,c!=d,e,!f``."""

    requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        reqs: list[Requirement] = []
        for item in filter(None, (p.strip() for p in text.split(","))):
            if "!=" in item:
                key, value = (s.strip() for s in item.split("!=", 1))
                reqs.append(Requirement(validate_key(key), "!=", validate_value(key, value)))
            elif "=" in item:
                key, value = (s.strip() for s in item.replace("==", "=").split("=", 1))
                reqs.append(Requirement(validate_key(key), "=", validate_value(key, value)))
            elif item.startswith("!"):
                reqs.append(Requirement(validate_key(item[1:].strip()), "!exists"))
            else:
                reqs.append(Requirement(validate_key(item), "exists"))
        return cls(tuple(reqs))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            parts.append({"exists": r.key, "!exists": f"!{r.key}"}.get(r.op, f"{r.key}{r.op}{r.value}"))
        return ",".join(parts)
