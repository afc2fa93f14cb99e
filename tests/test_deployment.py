"""What the deployment files promise: the compose stack (parsed, not run: no Docker here), the
image build context, and the KubernetesExecutor's GPU pod for GPU tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tasks.config import REPO_ROOT
from tasks.k8s import GPU_RESOURCE, executor_config, gpu_pod_override

COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer",
                    "worker-cpu", "worker-gpu")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_airflow_service_is_built_from_one_definition():
    services = compose()["services"]
    assert set(AIRFLOW_SERVICES) <= set(services)
    builds = {name: services[name]["build"] for name in AIRFLOW_SERVICES}
    assert {(b["context"], b["dockerfile"]) for b in builds.values()} == {("..", "docker/Dockerfile")}
    assert builds["worker-gpu"]["args"]["TORCH_INDEX_URL"].startswith("${GPU_TORCH_INDEX_URL")
    assert not (REPO_ROOT / "docker" / "Dockerfile.gpu").exists()


def test_workers_serve_the_queues_the_dag_uses():
    services = compose()["services"]
    cpu, gpu = services["worker-cpu"], services["worker-gpu"]
    assert cpu["command"][:3] == ["airflow", "celery", "worker"]
    assert "${CPU_WORKER_QUEUES:-default}" in cpu["command"]
    assert gpu["command"] == ["airflow", "celery", "worker", "--queues", "gpu", "--concurrency", "1"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
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


def test_gpu_tasks_ask_the_kubernetes_executor_for_a_gpu_pod():
    pod = gpu_pod_override()
    [container] = pod.spec.containers
    assert container.name == "base"  # the container Airflow's pod template runs the task in
    assert container.resources.limits == {GPU_RESOURCE: "1"} == container.resources.requests
    assert pod.spec.tolerations[0].key == GPU_RESOURCE
    assert executor_config(True, "LocalExecutor") == {} == executor_config(False, "KubernetesExecutor")
    assert executor_config(True, "CeleryExecutor,KubernetesExecutor")["pod_override"] == pod


def test_the_dag_asks_for_gpu_pods_under_the_kubernetes_executor():
    dag_file = REPO_ROOT / "dags" / "textclf_retrain.py"
    code = (
        f"import json, runpy; dag = runpy.run_path({str(dag_file)!r})['textclf_retrain']()\n"
        "print(json.dumps(sorted(t.task_id for t in dag.tasks if t.executor_config)))"
    )
    env = {**os.environ, "AIRFLOW__CORE__EXECUTOR": "KubernetesExecutor"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["predict_gpu", "train_bert"]
