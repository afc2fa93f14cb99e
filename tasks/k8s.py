"""What a task asks of the KubernetesExecutor: a pod with one GPU for a GPU candidate kind.

Used only when Airflow runs with the KubernetesExecutor (the DAG checks); needs the
``kubernetes`` client package (``pip install textclf[kubernetes]``), which the executor's
provider brings anyway. The pod override is merged by Airflow into its pod template; the
container must be called ``base``.

The GPU pod runs the GPU image (the pod template's image has the CPU build of torch) and can be
pinned to a node pool. Both come from the environment of the component that parses the DAG
(dag-processor) and the scheduler:

- ``TEXTCLF_GPU_IMAGE``: default ``textclf-airflow:gpu``, the tag docker/compose.yaml gives the
  GPU build of docker/Dockerfile;
- ``TEXTCLF_GPU_NODE_SELECTOR``: ``key=value[,key=value...]``, e.g.
  ``cloud.google.com/gke-accelerator=nvidia-l4``; default none (the GPU request alone keeps the
  pod off nodes without one).
"""

from __future__ import annotations

import os
import re
from typing import Any

from tasks.errors import ConfigError

GPU_RESOURCE = "nvidia.com/gpu"
GPU_IMAGE_ENV = "TEXTCLF_GPU_IMAGE"
GPU_NODE_SELECTOR_ENV = "TEXTCLF_GPU_NODE_SELECTOR"
DEFAULT_GPU_IMAGE = "textclf-airflow:gpu"

# Kubernetes label syntax: an optional DNS-subdomain prefix and "/", then a name of at most 63
# characters; values likewise (may be empty). Checked here so that a typo fails the DAG's parse
# with one line instead of leaving the pod Pending forever.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}")
_LABEL_VALUE = re.compile(rf"({_LABEL_NAME})?")


def parse_node_selector(text: str) -> dict[str, str]:
    """``"a=b, c/d=e"`` as ``{"a": "b", "c/d": "e"}``; blank text selects nothing."""
    selector: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(
                f"{GPU_NODE_SELECTOR_ENV}: {item!r} is not a Kubernetes label key=value pair"
            )
        selector[key] = value
    return selector


def gpu_pod_override(gpus: int = 1, image: str | None = None,
                     node_selector: dict[str, str] | None = None) -> Any:
    """A V1Pod requesting ``gpus`` NVIDIA GPUs for the task's container, running the GPU image,
    tolerating GPU taints, on the selected nodes. Image and selector default to the environment."""
    from kubernetes.client import models as k8s

    if image is None:
        image = os.environ.get(GPU_IMAGE_ENV, "").strip() or DEFAULT_GPU_IMAGE
    if node_selector is None:
        node_selector = parse_node_selector(os.environ.get(GPU_NODE_SELECTOR_ENV, ""))
    resources = {GPU_RESOURCE: str(gpus)}
    return k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(
                name="base",
                image=image,
                resources=k8s.V1ResourceRequirements(requests=resources, limits=resources),
            )],
            tolerations=[k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")],
            node_selector=node_selector or None,
        )
    )


def executor_config(needs_gpu: bool, executor: str) -> dict[str, Any]:
    """``executor_config`` for a task: a GPU pod override under the KubernetesExecutor (also in a
    hybrid setting such as "CeleryExecutor,KubernetesExecutor"), else nothing."""
    if needs_gpu and "KubernetesExecutor" in executor:
        return {"pod_override": gpu_pod_override()}
    return {}
