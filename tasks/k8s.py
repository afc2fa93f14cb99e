"""What a task asks of the KubernetesExecutor: a pod with one GPU for a GPU candidate kind.

Used only when Airflow runs with the KubernetesExecutor (the DAG checks); needs the
``kubernetes`` client package (``pip install textclf[kubernetes]``), which the executor's
provider brings anyway. The pod override is merged by Airflow into its pod template; the
container must be called ``base``.
"""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"


def gpu_pod_override(gpus: int = 1) -> Any:
    """A V1Pod requesting ``gpus`` NVIDIA GPUs for the task's container, tolerating GPU taints."""
    from kubernetes.client import models as k8s

    resources = {GPU_RESOURCE: str(gpus)}
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(
                name="base",
                resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
            )],
            tolerations=[k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
        )
    )


def executor_config(needs_gpu: bool, executor: str) -> dict[str, Any]:
    """``executor_config`` for a task: a GPU pod override under the KubernetesExecutor (also in a
    hybrid setting such as "CeleryExecutor,KubernetesExecutor"), else nothing."""
    if needs_gpu and "KubernetesExecutor" in executor:
        return {"pod_override": gpu_pod_override()}
    return {}
