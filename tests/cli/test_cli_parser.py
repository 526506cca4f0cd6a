"""The fleetflow command's parser: every list and get has -o, every command that talks to a cluster
has --kubeconfig and --context, every positional argument is explained, and the completion
script names every subcommand and option."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fleetflow_dev.cli import parser as fleet_parser

from fleetflow import config
from fleetflow.cli import completion, options
from fleetflow.cli.main import parser

# Commands that talk to no cluster: the plugin (its own process), the Prefect-only ones, the local
# platform's own commands, and completion. Every other command must take --kubeconfig and --context.
NO_CLUSTER = {"fleet", "down", "demo", "status", "deploy", "completion"}
LISTS_AND_GETS = {"list", "ls", "get"}
LIST_LIKE = {("show", "addons"), ("show", "databases"), ("status",)}


def _tree(
    command: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, bool]]:
    """(path, parser, is_leaf) for every command under ``command``, aliases included."""
    subs = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, command, not subs
    for action in subs:
        for name, child in action.choices.items():
            yield from _tree(child, (*path, name))


def _option(command: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in command._actions if flag in a.option_strings), None)


LEAVES = [(path, command) for path, command, leaf in _tree(parser()) if leaf]


def test_every_list_and_get_offers_json_and_yaml() -> None:
    checked = []
    for path, command in LEAVES:
        if path[-1] in LISTS_AND_GETS or path in LIST_LIKE:
            output = _option(command, "-o")
            assert output is not None, f"fleetflow {' '.join(path)} has no -o"
            assert {"table", "wide", "json", "yaml"} <= set(output.choices or ()), path
            assert _option(command, "--output") is output
            checked.append(" ".join(path))
    assert {"cluster list", "cluster get", "db list", "db get", "status"} <= set(checked)


def test_every_command_that_talks_to_a_cluster_takes_kubeconfig_and_context() -> None:
    for path, command in LEAVES:
        if path[0] in NO_CLUSTER:
            continue
        for flag in ("--kubeconfig", "--context"):
            assert _option(command, flag) is not None, f"fleetflow {' '.join(path)} has no {flag}"


def test_context_is_the_management_cluster_except_for_the_cluster_being_registered() -> None:
    args = parser().parse_args(["db", "list", "--context", "hub", "--kubeconfig", "k"])
    assert (args.mgmt_context, args.kubeconfig) == ("hub", "k")
    assert parser().parse_args(["db", "list", "--mgmt-context", "hub"]).mgmt_context == "hub"
    reg = parser().parse_args(
        ["cluster", "register", "shop", "--context", "kind-shop", "--mgmt-context", "hub"]
    )
    assert (reg.context, reg.mgmt_context) == ("kind-shop", "hub")
    reg = parser().parse_args(
        ["cluster", "register", "shop", "--context", "kind-shop", "--kubeconfig", "shop.yaml"]
    )
    assert reg.cluster_kubeconfig == "shop.yaml", (
        "register's --kubeconfig holds the registered cluster's context"
    )
    assert getattr(reg, "kubeconfig", None) is None, "and is not the management cluster's"
    init = parser().parse_args(["init", "--context", "hub"])
    assert init.mgmt_context == "hub"


def test_the_options_become_the_configuration_of_this_process_and_its_children(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv(config.MGMT_CONTEXT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    options.apply(parser().parse_args(["cluster", "list", "--kubeconfig", "kc", "--context", "hub"]))
    assert os.environ["KUBECONFIG"] == str(tmp_path / "kc"), (
        "a relative path must survive a change of directory"
    )
    assert config.resolve_kubeconfig().path == tmp_path / "kc"
    assert config.mgmt_context() == "hub"


def test_verbose_goes_before_or_after_a_command_that_runs_flows() -> None:
    assert parser().parse_args(["-v", "demo"]).verbose is True
    assert parser().parse_args(["demo", "-v"]).verbose is True
    assert parser().parse_args(["demo"]).verbose is False
    assert parser().parse_args(["run", "deploy-app", "--verbose"]).runs_flows is True


@pytest.mark.parametrize(("name", "build"), [("fleetflow", parser), ("fleetflow fleet", fleet_parser)])
def test_every_positional_argument_has_a_name_and_help(
    name: str, build: Callable[[], argparse.ArgumentParser]
) -> None:
    for path, command, _ in _tree(build()):
        for action in command._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            where = f"{name} {' '.join(path)} {action.dest}"
            assert action.help, f"{where}: no help"
            assert action.help != argparse.SUPPRESS, f"{where}: hidden"
            assert action.metavar, f"{where}: no metavar"


def test_the_completion_script_names_every_subcommand_and_option() -> None:
    root = parser()
    script = completion.bash(root)
    for path, command, _ in _tree(root):
        if path:
            assert f"'fleetflow {' '.join(path)}'" in script, f"completion misses fleetflow {' '.join(path)}"
        if path and path[0] == "fleet":
            continue  # the plugin's own parser is another program's
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in script, f"completion misses {flag} of fleetflow {' '.join(path)}"
    assert "'table wide json yaml'" in script, "-o's choices are not offered"
    assert script.rstrip().endswith("complete -F _fleetflow fleetflow")
    zsh = completion.zsh(root)
    assert zsh.startswith("#compdef fleetflow")
    assert "bashcompinit" in zsh
    assert zsh.endswith(script), "zsh does not run the bash script"
