"""What several hosts demand, checked before it can bite: pure checks, no database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.config import Settings
from tasks.errors import ConfigError
from tasks.observability import Metric, step_metrics
from tasks.topology import (
    check_gpu_worker,
    check_pools,
    check_shared_roots,
    is_distributed,
    storage_options_from_connection,
)

CELERY = "CeleryExecutor"


@pytest.mark.parametrize("executor, distributed", [
    ("LocalExecutor", False), ("SequentialExecutor", False), (CELERY, True),
    ("KubernetesExecutor", True), ("LocalExecutor,KubernetesExecutor", True),
    ("airflow.providers.edge3.executors.EdgeExecutor", True),
])
def test_distributed_executors(executor, distributed):
    assert is_distributed(executor) is distributed


def test_local_roots_are_refused_under_a_distributed_executor_with_what_to_set(tmp_path):
    settings = Settings(home=tmp_path)
    check_shared_roots(settings, "LocalExecutor")  # one host: the home is shared by definition
    with pytest.raises(ConfigError) as refused:
        check_shared_roots(settings, CELERY)
    message = str(refused.value)
    assert f"run_root ({tmp_path / 'runs'}) and artifact_root ({tmp_path / 'models'})" in message
    assert "s3://" in message and "shared_filesystem = true" in message and CELERY in message
    with pytest.raises(ConfigError, match=r"^artifact_root \(/mnt/models\) is a folder"):
        check_shared_roots(replace(settings, run_root="s3://b/runs", artifact_root="/mnt/models"), CELERY)
    check_shared_roots(replace(settings, run_root="s3://b/runs", artifact_root="gs://b/models"), CELERY)
    check_shared_roots(replace(settings, shared_filesystem=True), "KubernetesExecutor")


def test_a_gpu_worker_without_cuda_refuses_unless_allowed():
    check_gpu_worker("train_bert", CELERY, cuda_available=True, allow_cpu_fallback=False)
    check_gpu_worker("train_bert", "LocalExecutor", cuda_available=False, allow_cpu_fallback=False)
    check_gpu_worker("train_bert", CELERY, cuda_available=False, allow_cpu_fallback=True)
    with pytest.raises(ConfigError, match="train_bert runs on the gpu queue.*allow_cpu_fallback = true"):
        check_gpu_worker("train_bert", CELERY, cuda_available=False, allow_cpu_fallback=False)


def test_missing_or_empty_pools_name_the_command_to_run():
    check_pools({"gpu": 1}, {"default_pool": 128, "gpu": 2})
    with pytest.raises(ConfigError, match=r"pool 'gpu' does not exist.*airflow pools import docker/pools.json"):
        check_pools({"gpu": 1, "default_pool": 1}, {"default_pool": 128})
    with pytest.raises(ConfigError, match="pool 'gpu' has 0 slots"):
        check_pools({"gpu": 1}, {"gpu": 0})


def test_storage_options_follow_the_providers_connection_fields():
    aws = storage_options_from_connection(
        "aws", "AKIA", "secret", None,
        {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1", "aws_session_token": "tok"})
    assert aws == {"s3": {"key": "AKIA", "secret": "secret", "token": "tok",
                          "endpoint_url": "http://minio:9000",
                          "client_kwargs": {"region_name": "eu-west-1"}}}
    nested = storage_options_from_connection(
        "aws", None, None, None, {"service_config": {"s3": {"endpoint_url": "http://s3.local"}}})
    assert nested == {"s3": {"endpoint_url": "http://s3.local"}}  # role/instance credentials
    gcp = storage_options_from_connection("google_cloud_platform", None, None, None,
                                          {"keyfile_dict": '{"type": "service_account"}', "project": "p"})
    assert gcp["gs"] == gcp["gcs"] == {"token": {"type": "service_account"}, "project": "p"}
    azure = storage_options_from_connection("wasb", "account", "key", None, {})
    assert azure["abfs"] == {"account_name": "account", "account_key": "key"}
    with pytest.raises(ConfigError, match="connections of type 'ftp' are not supported"):
        storage_options_from_connection("ftp", None, None, None, {})


def test_each_step_reports_its_figures_under_documented_names():
    import tasks.observability as observability

    evaluate = {"champion": 3, "leaderboard": [
        {"name": "v5 tfidf", "macro_f1": 0.75}, {"name": "v3 tfidf", "macro_f1": 0.74},
        {"name": "v6 bert", "macro_f1": 0.70}, {"name": "v4 tfidf", "macro_f1": 0.72}]}
    assert step_metrics("evaluate", evaluate) == [
        Metric("textclf.evaluate.champion.macro_f1", "gauge", 0.74),
        Metric("textclf.evaluate.bert.macro_f1", "gauge", 0.70),
        Metric("textclf.evaluate.tfidf.macro_f1", "gauge", 0.75)]
    assert step_metrics("train", {"kind": "bert", "train_seconds": 1.5}) == [
        Metric("textclf.train.bert.seconds", "timing", 1500.0)]
    assert step_metrics("promote", {"promoted": False})[0].value == 0.0
    assert step_metrics("validate", None) == []
    every_name = [m.name for step, result in [
        ("extract", {"snapshot_rows": 10, "new_rows": 2}),
        ("validate", {"quarantined_rows": 1, "status": "passed"}),
        ("predict", {"rows_written": 5, "documents": 7})] for m in step_metrics(step, result)]
    for name in every_name:  # the module's docstring is the documentation of the names
        assert name in observability.__doc__, name
    with pytest.raises(ValueError, match="no metrics are defined for step 'gc'"):
        step_metrics("gc", {"x": 1})


def test_a_root_that_cannot_be_written_is_a_configuration_error_naming_it(tmp_path):
    """A read-only mount, a foreign owner, or (portable, as root too) a path under a file."""
    from dataclasses import replace

    from tasks.config import load_settings
    from tasks.topology import check_writable_roots

    settings = load_settings(home=tmp_path / "home", database_url="postgresql://x@127.0.0.1/none")
    check_writable_roots(settings)  # the defaults under TEXTCLF_HOME are fine
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for name in ("run_root", "artifact_root"):
        with pytest.raises(ConfigError, match=f"^{name} \\({blocker}/runs\\) cannot be written by this worker"):
            check_writable_roots(replace(settings, **{name: str(blocker / "runs")}))
