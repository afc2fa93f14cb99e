"""What the deployment files promise: the compose stack and the Helm values (parsed, not run: no
Docker or cluster here), the pools file, the image build context, and the KubernetesExecutor's
GPU pod for GPU tasks."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tasks.config import REPO_ROOT
from tasks.errors import ConfigError
from tasks.k8s import (
    DEFAULT_GPU_IMAGE,
    GPU_IMAGE_ENV,
    GPU_NODE_SELECTOR_ENV,
    GPU_RESOURCE,
    executor_config,
    gpu_pod_override,
    parse_node_selector,
)

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
HELM_VALUES = DOCKER / "helm-values.yaml"
POOLS = DOCKER / "pools.json"
POOLS_IN_IMAGE = "/opt/textclf/pools.json"
GPU_WORKERS = ("worker-gpu-0", "worker-gpu-1")
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer",
                    "worker-cpu", *GPU_WORKERS)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def helm_values() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


def pools() -> dict:
    return json.loads(POOLS.read_text())


def worker_queues(command: list[str] | str) -> set[str]:
    """The queues an `airflow celery worker` command line serves; a compose `${VAR:-default}`
    counts as its default, a bare worker serves Airflow's default queue."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    assert "celery" in words and "worker" in words, words
    if "--queues" not in words:
        return {"default"}
    value = words[words.index("--queues") + 1]
    value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
    return set(value.split(","))


def worker_concurrency(command: list[str] | str) -> str:
    words = shlex.split(command) if isinstance(command, str) else list(command)
    return words[words.index("--concurrency") + 1]


@pytest.fixture(scope="module")
def retrain_dag(airflow_ready):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["textclf_retrain"]


def test_every_airflow_service_is_built_from_one_definition():
    services = compose()["services"]
    assert set(AIRFLOW_SERVICES) <= set(services)
    builds = {name: services[name]["build"] for name in AIRFLOW_SERVICES}
    assert {(b["context"], b["dockerfile"]) for b in builds.values()} == {("..", "docker/Dockerfile")}
    for name in GPU_WORKERS:
        assert builds[name]["args"]["TORCH_INDEX_URL"].startswith("${GPU_TORCH_INDEX_URL")
        assert services[name]["image"] == DEFAULT_GPU_IMAGE  # the GPU pod's default image, too
    assert not (REPO_ROOT / "docker" / "Dockerfile.gpu").exists()


def test_compose_runs_one_gpu_worker_per_device():
    services = compose()["services"]
    devices = {}
    for name, service in services.items():
        reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        for device in reservations.get("devices", []):
            assert device["capabilities"] == ["gpu"] and "count" not in device, name
            [devices[name]] = device["device_ids"]  # exactly one named device, never a count
    assert devices == {"worker-gpu-0": "0", "worker-gpu-1": "1"}
    for name in devices:
        command = services[name]["command"]
        assert command[:3] == ["airflow", "celery", "worker"]
        assert worker_queues(command) == {"gpu"} and worker_concurrency(command) == "1"
    # Device 0 starts with the stack; device 1 only when its profile is asked for.
    assert "profiles" not in services["worker-gpu-0"] and services["worker-gpu-1"]["profiles"] == ["gpu1"]


def test_workers_serve_the_queues_the_dag_uses(retrain_dag):
    services = compose()["services"]
    served = set().union(*(worker_queues(services[name]["command"]) for name in ("worker-cpu", *GPU_WORKERS)))
    assert {task.queue for task in retrain_dag.tasks} == {"default", "gpu"} == served
    env = services["scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW_CONN_TEXTCLF_DB"].startswith("postgresql://")
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "textclf db upgrade" in init  # migrations: an explicit step
    volumes = {v.split(":")[0] for v in services["worker-cpu"]["volumes"]}
    assert {"textclf-home", "airflow-logs"} <= volumes  # run data and logs shared between workers


def test_no_secret_is_written_into_the_compose_file():
    text = COMPOSE.read_text()
    for variable in ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "REDIS_PASSWORD",
                     "TEXTCLF_DB_PASSWORD", "AIRFLOW_ADMIN_PASSWORD"):
        assert f"${{{variable}" in text, variable  # always from docker/.env
    assert "docker/.env" in (REPO_ROOT / ".gitignore").read_text()


def test_the_build_context_leaves_out_environments_and_secrets():
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".textclf", "docker/.env", ".git"} <= ignored


def test_pools_file_holds_every_pool_the_dag_uses(retrain_dag):
    used = {task.pool for task in retrain_dag.tasks} - {"default_pool"}  # Airflow makes that one
    assert used == {"gpu"}
    assert used <= set(pools())
    for name, pool in pools().items():
        assert pool["slots"] >= 1 and pool["description"], name


def test_the_pools_file_is_what_airflow_pools_import_reads(airflow_ready):
    from airflow.cli.commands.pool_command import pool_import_helper
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    imported, failed = pool_import_helper(str(POOLS))  # the body of `airflow pools import`
    assert failed == [] and {row[0] for row in imported} == set(pools())
    with create_session() as session:
        gpu = session.query(Pool).filter(Pool.pool == "gpu").one()
        assert (gpu.slots, gpu.description) == (pools()["gpu"]["slots"], pools()["gpu"]["description"])


def test_every_deployment_loads_the_pools_file():
    init = compose()["services"]["airflow-init"]
    assert f"airflow pools import {POOLS_IN_IMAGE}" in init["command"][-1]
    assert "pools set" not in init["command"][-1]  # one source of truth
    assert f"./pools.json:{POOLS_IN_IMAGE}:ro" in init["volumes"]
    assert f"COPY --chown=airflow:0 docker/pools.json {POOLS_IN_IMAGE}" in (DOCKER / "Dockerfile").read_text()
    migrate = helm_values()["migrateDatabaseJob"]["args"]
    assert migrate[:2] == ["bash", "-ec"]
    assert migrate[2].splitlines() == ["airflow db migrate", f"airflow pools import {POOLS_IN_IMAGE}",
                                       "textclf db upgrade"]


def test_gpu_pool_has_a_slot_per_gpu_worker_of_each_example():
    slots = pools()["gpu"]["slots"]
    services = compose()["services"]
    default_gpu_workers = [n for n in GPU_WORKERS if "profiles" not in services[n]]
    assert slots == len(default_gpu_workers)
    [gpu_set] = [s for s in helm_values()["workers"]["celery"]["sets"] if s["name"] == "gpu"]
    assert slots == gpu_set["replicas"] * gpu_set["resources"]["limits"][GPU_RESOURCE]


def test_helm_values_route_the_queues_and_ask_for_gpus(retrain_dag):
    values = helm_values()
    assert values["executor"] == "CeleryExecutor"
    celery = values["workers"]["celery"]
    assert celery["enableDefault"] is True
    [gpu_set] = celery["sets"]
    assert worker_queues(celery["args"][-1]) == {"default"}
    assert worker_queues(gpu_set["args"][-1]) == {"gpu"} and worker_concurrency(gpu_set["args"][-1]) == "1"
    assert {task.queue for task in retrain_dag.tasks} == worker_queues(celery["args"][-1]) | worker_queues(gpu_set["args"][-1])
    assert gpu_set["resources"]["requests"] == gpu_set["resources"]["limits"] == {GPU_RESOURCE: 1}
    assert gpu_set["nodeSelector"]
    assert {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in gpu_set["tolerations"]
    assert {"envName": "AIRFLOW_CONN_TEXTCLF_DB", "secretName": "textclf-db", "secretKey": "connection"} in values["secret"]
    # The KubernetesExecutor's GPU pods get the same image and nodes as the GPU worker set.
    env = {item["name"]: item["value"] for item in values["env"]}
    image = values["images"]["airflow"]
    assert env[GPU_IMAGE_ENV] == f"{image['repository']}:{image['tag']}"
    assert parse_node_selector(env[GPU_NODE_SELECTOR_ENV]) == gpu_set["nodeSelector"]


def test_gpu_tasks_ask_the_kubernetes_executor_for_a_gpu_pod(monkeypatch):
    from kubernetes.client import ApiClient

    monkeypatch.delenv(GPU_IMAGE_ENV, raising=False)
    monkeypatch.delenv(GPU_NODE_SELECTOR_ENV, raising=False)
    pod = gpu_pod_override()
    [container] = pod.spec.containers
    assert container.name == "base"  # the container Airflow's pod template runs the task in
    assert container.image == DEFAULT_GPU_IMAGE  # not the pod template's CPU image
    assert container.resources.limits == {GPU_RESOURCE: "1"} == container.resources.requests
    assert pod.spec.tolerations[0].key == GPU_RESOURCE
    assert pod.spec.node_selector is None
    assert executor_config(True, "LocalExecutor") == {} == executor_config(False, "KubernetesExecutor")
    assert executor_config(True, "CeleryExecutor,KubernetesExecutor")["pod_override"] == pod

    monkeypatch.setenv(GPU_IMAGE_ENV, "registry.example.com/textclf-airflow:gpu-7")
    monkeypatch.setenv(GPU_NODE_SELECTOR_ENV, "cloud.google.com/gke-accelerator=nvidia-l4, pool=gpu")
    spec = ApiClient().sanitize_for_serialization(executor_config(True, "KubernetesExecutor")["pod_override"])
    assert spec == {"spec": {
        "containers": [{"name": "base", "image": "registry.example.com/textclf-airflow:gpu-7",
                        "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}}}],
        "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "gpu"},
        "tolerations": [{"effect": "NoSchedule", "key": GPU_RESOURCE, "operator": "Exists"}],
    }}


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    (" , ", {}),
    ("pool=gpu", {"pool": "gpu"}),
    ("nvidia.com/gpu.present=true,kubernetes.io/arch = amd64", {"nvidia.com/gpu.present": "true",
                                                                "kubernetes.io/arch": "amd64"}),
    ("empty-value=", {"empty-value": ""}),
])
def test_node_selector_text_becomes_labels(text, expected):
    assert parse_node_selector(text) == expected


@pytest.mark.parametrize("text", ["pool", "=gpu", "pool=gpu nodes", "-pool=gpu", "Bad_Prefix/pool=gpu",
                                  "pool=" + "x" * 64, "a/b/c=d"])
def test_a_malformed_node_selector_fails_with_the_variable_named(text):
    with pytest.raises(ConfigError, match=GPU_NODE_SELECTOR_ENV):
        parse_node_selector(text)


def test_the_dag_asks_for_gpu_pods_under_the_kubernetes_executor():
    dag_file = REPO_ROOT / "dags" / "textclf_retrain.py"
    code = (
        f"import json, runpy; dag = runpy.run_path({str(dag_file)!r})['textclf_retrain']()\n"
        "print(json.dumps(sorted(t.task_id for t in dag.tasks if t.executor_config)))"
    )
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["predict_gpu", "score_gpu", "train_bert"]
