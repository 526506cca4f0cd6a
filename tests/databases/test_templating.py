"""The default templates reproduce the seed's objects, and no value can change a manifest's structure."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from fleetflow import templating
from fleetflow.errors import UsageError
from fleetflow.templating import TemplateError, TemplateSet, render

SEED_SQL = (
    "--command=create table Todo (id bigint not null,completed boolean not null,ordering integer,"
    "title varchar(255),url varchar(255),primary key (id));"
    "create sequence hibernate_sequence start with 1 increment by 1;"
)


def test_cnpg_cluster_matches_the_seed() -> None:
    [cluster] = render("cnpg-cluster.yaml.j2", {"cluster": "workload-cluster"})
    assert cluster == {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": "cluster-workload-cluster",
            "namespace": "workload-cluster",
            "labels": {"cluster": "workload-cluster-workload-cluster"},
        },
        "spec": {
            "instances": 3,
            "bootstrap": {"initdb": {"database": "todo"}},
            "storage": {"size": "1Gi"},
            "managed": {
                "services": {
                    "disabledDefaultServices": ["ro", "r"],
                    "additional": [
                        {
                            "selectorType": "rw",
                            "serviceTemplate": {
                                "metadata": {"name": "cluster-rw-lb"},
                                "spec": {"type": "LoadBalancer"},
                            },
                        }
                    ],
                }
            },
        },
    }


def test_cnpg_cluster_parameters() -> None:
    [cluster] = render(
        "cnpg-cluster.yaml.j2", {"cluster": "shop", "cluster_namespace": "team-a", "instances": 1}
    )
    assert cluster["metadata"]["name"] == "cluster-shop"
    assert cluster["metadata"]["namespace"] == "shop"
    assert cluster["metadata"]["labels"] == {"cluster": "team-a-shop"}
    assert cluster["spec"]["instances"] == 1


def test_pg_credentials_secret() -> None:
    [secret] = render(
        "pg-credentials.yaml.j2", {"namespace": "workload-cluster", "user": "app", "password": "s3cr:et\n"}
    )
    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["metadata"] == {"name": "pg-credentials", "namespace": "workload-cluster"}
    assert sorted(secret["data"]) == ["password", "user"]
    assert base64.b64decode(secret["data"]["user"]) == b"app"
    assert base64.b64decode(secret["data"]["password"]) == b"s3cr:et\n"


def test_pg_loadbalancer_data_configmap() -> None:
    [config] = render(
        "pg-loadbalancer-data.yaml.j2",
        {"namespace": "workload-cluster", "external_ip": "10.0.0.7", "port": 5432, "labels": {"a": "b"}},
    )
    assert config["kind"] == "ConfigMap"
    assert config["metadata"] == {
        "name": "pg-loadbalancer-data",
        "namespace": "workload-cluster",
        "labels": {"a": "b"},
    }
    assert config["data"] == {"external-ip": "10.0.0.7", "port": "5432"}


def test_todo_table_job_matches_the_seed_and_reads_the_password_from_a_secret() -> None:
    values = {"host": "10.0.0.7", "port": 5432, "user": "app", "password": "never-in-the-job"}
    [job] = render("todo-table-job.yaml.j2", values)
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    assert job["metadata"] == {"name": "todo-table", "namespace": "todo"}
    assert job["spec"]["ttlSecondsAfterFinished"] == 1000
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["name"] == "postgresql-client"
    assert container["image"] == "postgres:12"
    assert container["command"] == ["psql"]
    assert container["args"] == [
        "--host=10.0.0.7",
        "--port=5432",
        "--username=app",
        "--no-password",
        "--dbname=todo",
        SEED_SQL,
    ]
    assert container["env"] == [
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "pg-credentials", "key": "password"}}}
    ]
    assert "never-in-the-job" not in yaml.safe_dump(job)
    assert "never-in-the-job" not in TemplateSet().render_text("todo-table-job.yaml.j2", values)


@pytest.mark.parametrize(
    "evil", ["x\nkind: Secret", "a: b", "'; {x: y}", '"quoted"\n---\nkind: Secret', "-\t#"]
)
def test_values_cannot_inject_yaml(evil: str) -> None:
    [cluster] = render("cnpg-cluster.yaml.j2", {"cluster": "c", "cluster_namespace": evil})
    assert cluster["kind"] == "Cluster"
    assert cluster["metadata"]["labels"] == {"cluster": f"{evil}-c"}
    [config] = render(
        "pg-loadbalancer-data.yaml.j2",
        {"namespace": "n", "external_ip": evil, "port": evil, "labels": {evil: evil}},
    )
    assert config["kind"] == "ConfigMap"
    assert config["data"] == {"external-ip": evil, "port": evil}
    assert config["metadata"]["labels"] == {evil: evil}


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -7,
        1.5,
        1e20,
        "",
        "null",
        "true",
        "007",
        "😀 \x85\u2028\t",
        ["a", 1, None],
        {"k": [1, {"n": "v"}]},
    ],
)
def test_every_value_round_trips_with_its_type(value: object) -> None:
    assert yaml.safe_load(f"key: {templating.yaml_value(value)}") == {"key": value}


def test_undefined_variable_names_the_file_and_line() -> None:
    with pytest.raises(TemplateError, match=r"cnpg-cluster\.yaml\.j2 line \d+: 'cluster' is undefined"):
        render("cnpg-cluster.yaml.j2", {})


def _user_dir(tmp_path: Path, name: str, text: str) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)
    return directory


def test_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    directory = _user_dir(tmp_path, "broken.yaml.j2", "apiVersion: v1\nkind: {{ kind }\n")
    with pytest.raises(TemplateError, match=r"broken\.yaml\.j2 line 2: syntax error") as info:
        render("broken.yaml.j2", {"kind": "x"}, directory)
    assert "\n" not in str(info.value)


def test_output_that_is_not_yaml_is_an_error(tmp_path: Path) -> None:
    directory = _user_dir(tmp_path, "bad.yaml.j2", "apiVersion: v1\n  kind: [\n")
    with pytest.raises(TemplateError, match=r"bad\.yaml\.j2: output is not valid YAML line \d+"):
        render("bad.yaml.j2", {}, directory)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a\n- b\n", "a list, not a mapping"),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "missing apiVersion"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "missing kind"),
        ("apiVersion: v1\nkind: ConfigMap\n", "missing metadata"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: x}\n", "missing metadata.name"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nplain text\n", "document 2"),
    ],
)
def test_output_that_is_not_a_kubernetes_object_is_an_error(tmp_path: Path, text: str, problem: str) -> None:
    directory = _user_dir(tmp_path, "thing.yaml.j2", text)
    with pytest.raises(TemplateError, match=r"thing\.yaml\.j2") as info:
        render("thing.yaml.j2", {}, directory)
    assert problem in str(info.value)


def test_empty_documents_are_dropped(tmp_path: Path) -> None:
    text = "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ name }}}\n---\n"
    directory = _user_dir(tmp_path, "one.yaml.j2", text)
    assert render("one.yaml.j2", {"name": "x"}, directory) == [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    ]


def test_user_directory_overrides_a_default_and_falls_back_for_the_rest(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ 'mine-' ~ cluster }}\n"
    directory = _user_dir(tmp_path, "cnpg-cluster.yaml.j2", text)
    assert render("cnpg-cluster.yaml.j2", {"cluster": "c"}, directory)[0]["metadata"]["name"] == "mine-c"
    [job] = render("todo-table-job.yaml.j2", {"host": "h", "port": 1, "user": "u"}, directory)
    assert job["kind"] == "Job"
    assert "cnpg-cluster.yaml.j2" in TemplateSet(directory).names()


def test_environment_variable_names_the_user_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-env\n"
    monkeypatch.setenv("FLEETFLOW_TEMPLATES", str(_user_dir(tmp_path, "cnpg-cluster.yaml.j2", text)))
    assert render("cnpg-cluster.yaml.j2", {})[0]["metadata"]["name"] == "from-env"


def test_missing_directory_and_missing_template_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        render("cnpg-cluster.yaml.j2", {}, tmp_path / "nope")
    with pytest.raises(TemplateError, match=r"template nope\.yaml\.j2 not found"):
        render("nope.yaml.j2", {})
    with pytest.raises(TemplateError, match="not found"):
        render("../pyproject.toml", {})


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__",
        "''.__class__.__mro__",
        "''.format.__globals__",
        "'{0.__class__}'.format(1)",
        "values.__class__.__subclasses__()",
    ],
)
def test_sandbox_blocks_attribute_escapes(tmp_path: Path, expression: str) -> None:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ {expression} }}}}\n"
    directory = _user_dir(tmp_path, "escape.yaml.j2", text)
    with pytest.raises(TemplateError, match=r"escape\.yaml\.j2 line 4: blocked by the sandbox"):
        render("escape.yaml.j2", {"values": {}}, directory)


def test_unrenderable_value_is_a_template_error(tmp_path: Path) -> None:
    directory = _user_dir(
        tmp_path, "obj.yaml.j2", "apiVersion: v1\nkind: X\nmetadata:\n  name: {{ thing }}\n"
    )
    with pytest.raises(TemplateError, match="type object cannot be rendered"):
        render("obj.yaml.j2", {"thing": object()}, directory)


def test_default_templates_are_listed() -> None:
    assert TemplateSet().names() == [
        "cnpg-cluster.yaml.j2",
        "pg-credentials.yaml.j2",
        "pg-loadbalancer-data.yaml.j2",
        "todo-table-job.yaml.j2",
    ]
