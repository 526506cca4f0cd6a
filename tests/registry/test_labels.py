"""Label syntax as `fleetflow cluster register --labels`, `cluster label` and `-l` take it."""

from __future__ import annotations

import re

import pytest

from fleetflow.errors import UsageError
from fleetflow.labels import LabelDiff, LabelEdit, Selector, parse, validate, validate_dns_label


def test_parse_reads_comma_separated_pairs_and_trims_spaces() -> None:
    assert parse("type=services, tier=gold ,") == {"type": "services", "tier": "gold"}
    assert parse("fleetflow.io/role=db,empty=") == {"fleetflow.io/role": "db", "empty": ""}
    assert parse("") == {}


def test_parse_keeps_the_last_of_a_repeated_key() -> None:
    assert parse("a=1,a=2") == {"a": "2"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("type", "invalid label 'type': expected key=value"),
        ("-bad=x", "invalid label key '-bad'"),
        ("bad key=1", "invalid label key 'bad key'"),
        ("Bad.Prefix/name=1", "invalid label key 'Bad.Prefix/name': prefix must be a DNS-1123 subdomain"),
        ("/name=1", "invalid label key '/name': prefix must be a DNS-1123 subdomain"),
        ("a=" + "v" * 64, f"invalid value '{'v' * 64}' for label 'a': at most 63 characters"),
        ("a=-x", "invalid value '-x' for label 'a'"),
        ("k" * 64 + "=1", f"invalid label key '{'k' * 64}': name part must be 1-63 characters"),
    ],
)
def test_parse_rejects_what_kubernetes_rejects_naming_the_label(text: str, says: str) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(says)) as info:
        parse(text)
    assert "\n" not in str(info.value)


def test_the_longest_valid_name_and_value_are_accepted() -> None:
    assert parse(f"{'k' * 63}={'v' * 63}") == {"k" * 63: "v" * 63}
    assert validate({"a.b-c_d": "x.y-z_1"}) == {"a.b-c_d": "x.y-z_1"}


@pytest.mark.parametrize("name", ["workload-cluster", "a", "x" * 63, "0cluster9"])
def test_dns_labels_that_are_valid_cluster_names(name: str) -> None:
    assert validate_dns_label(name, "cluster name") == name


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "trail-", "x" * 64, "", "a.b", "UPPER"])
def test_dns_labels_that_are_not_cluster_names(name: str) -> None:
    with pytest.raises(
        UsageError, match=f"^invalid cluster name {re.escape(repr(name))}: must be a DNS-1123"
    ):
        validate_dns_label(name, "cluster name")


def test_label_edit_sets_overwrites_and_removes_like_kubectl() -> None:
    edit = LabelEdit.parse(["type=app", "tier=gold", "postgres-"])
    before = {"tier": "bronze", "postgres": "required", "keep": "me"}
    assert edit.applied_to(before) == {"tier": "gold", "type": "app", "keep": "me"}
    assert before == {"tier": "bronze", "postgres": "required", "keep": "me"}, "the input is not changed"


def test_removing_a_label_that_is_not_there_changes_nothing() -> None:
    assert LabelEdit.parse(["absent-"]).applied_to({"a": "1"}) == {"a": "1"}


def test_a_value_may_end_with_a_dash_when_set() -> None:
    assert LabelEdit.parse(["a=b-c"]).set == {"a": "b-c"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["a=1", "a-"], "label 'a' is both set and removed"),
        ([], "no label changes given"),
        (["justakey"], "invalid label argument 'justakey'"),
        (["bad key=1"], "invalid label key 'bad key'"),
        (["-"], "invalid label key ''"),
    ],
)
def test_label_edit_rejects_ambiguous_or_invalid_changes(args: list[str], says: str) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(says)):
        LabelEdit.parse(args)


def test_label_diff_names_what_was_added_changed_and_removed() -> None:
    diff = LabelDiff.between({"tier": "bronze", "postgres": "required"}, {"tier": "gold", "type": "app"})
    assert diff.added == {"type": "app"}
    assert diff.changed == {"tier": {"from": "bronze", "to": "gold"}}
    assert diff.removed == {"postgres": "required"}
    assert diff
    assert not LabelDiff.between({"a": "1"}, {"a": "1"})


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("type=services", {"type": "services", "tier": "gold"}, True),
        ("type==services", {"type": "services"}, True),
        ("type=services", {"type": "app"}, False),
        ("type=services", {}, False),
        ("type!=services", {"type": "app"}, True),
        ("type!=services", {}, True),
        ("type!=services", {"type": "services"}, False),
        ("postgres", {"postgres": ""}, True),
        ("postgres", {}, False),
        ("!postgres", {}, True),
        ("!postgres", {"postgres": "required"}, False),
        ("type=services,tier=gold", {"type": "services", "tier": "gold"}, True),
        ("type=services,tier=gold", {"type": "services"}, False),
        ("", {"anything": "x"}, True),
    ],
)
def test_selector_matches_like_kubectl_l(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert Selector.parse(selector).matches(labels) is matches


def test_selector_prints_back_as_it_is_written() -> None:
    text = "type=services,tier!=bronze,postgres,!paused"
    assert str(Selector.parse(text)) == text
    assert str(Selector.parse(" type == services ")) == "type=services"


@pytest.mark.parametrize("selector", ["bad key=1", "a=-x", "!", "a!=b c"])
def test_selector_rejects_invalid_keys_and_values(selector: str) -> None:
    with pytest.raises(UsageError, match=r"^invalid "):
        Selector.parse(selector)
