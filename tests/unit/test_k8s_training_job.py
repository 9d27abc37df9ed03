"""The multi-node Job's submit-and-watch (components/k8s_training_job.py). No Kubernetes API server can run
here, so what is tested is everything up to the network, for real: Job and pod states as the client
library serializes them, the job name, the configuration and connection errors a user meets."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest
from kubernetes_asyncio import client

from alignflow.components.config import load_config
from alignflow.components.platform.k8s.training_job import (
    TrainingJobError,
    job_outcome,
    pod_failures,
    run_training_job,
    training_job_name,
)


def _serialized(obj) -> dict:
    """What the task reads back: the client's model of the API object, serialized as the API spells it."""
    async def serialize() -> dict:
        async with client.ApiClient() as api:
            return api.sanitize_for_serialization(obj)

    return asyncio.run(serialize())


def _job(completions: int = 4, **status) -> dict:
    return _serialized(client.V1Job(spec=client.V1JobSpec(completions=completions, template=client.V1PodTemplateSpec()),
                                    status=client.V1JobStatus(**status)))


def _condition(kind: str, reason: str = "", message: str = "") -> client.V1JobCondition:
    return client.V1JobCondition(type=kind, status="True", reason=reason, message=message)


def test_job_states_read_from_the_clients_serialization():
    running = job_outcome(_job(active=3, succeeded=1))
    assert running.state == "running" and running.detail == "3 active, 1/4 succeeded, 0 failed"
    assert job_outcome(_job(succeeded=4, conditions=[_condition("Complete")])).state == "succeeded"
    assert job_outcome(_job(succeeded=4)).state == "succeeded"  # before the controller adds Complete
    # an Indexed Job with maxFailedIndexes 0 fails as a whole when one node does; FailureTarget comes first
    lost = job_outcome(_job(active=3, failed=1, failed_indexes="2",
                            conditions=[_condition("FailureTarget", "MaxFailedIndexesExceeded",
                                                   "Job has failed indexes")]))
    assert lost.state == "failed" and "MaxFailedIndexesExceeded" in lost.detail and "indexes 2" in lost.detail
    failed = job_outcome(_job(conditions=[_condition("Failed", "DeadlineExceeded", "too long"),
                                          client.V1JobCondition(type="Complete", status="False")]))
    assert failed.state == "failed" and failed.detail == "DeadlineExceeded: too long"
    # a condition whose status is not True does not count
    not_failed = client.V1JobCondition(type="Failed", status="False")
    assert job_outcome(_job(active=4, conditions=[not_failed])).state == "running"


def test_failed_containers_are_named_with_their_exit():
    def pod(name: str, exit_code: int, reason: str) -> client.V1Pod:
        state = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
            exit_code=exit_code, reason=reason, message="NCCL error: unhandled system error"))
        return client.V1Pod(metadata=client.V1ObjectMeta(name=name), status=client.V1PodStatus(container_statuses=[
            client.V1ContainerStatus(name="trainer", state=state, image="i", image_id="i", ready=False,
                                     restart_count=0)]))

    pods = _serialized(client.V1PodList(items=[pod("job-0-abc", 0, "Completed"), pod("job-2-def", 137, "OOMKilled")]))
    assert pod_failures(pods["items"]) == ["job-2-def/trainer: exit 137 OOMKilled NCCL error: unhandled system error"]


def test_job_names_are_dns_labels_stable_per_config_and_round():
    first = training_job_name("0123456789abcdef", 1)
    assert first == training_job_name("0123456789abcdef", 1) != training_job_name("0123456789abcdef", 2)
    assert first != training_job_name("fedcba9876543210", 1)
    assert len(first) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", first)


def test_configuration_requires_nodes_for_kubernetes_and_a_rendezvous_for_local():
    configured = load_config(None, ["launch.nnodes=2", "launch.backend=kubernetes"])
    assert configured.launch.kubernetes.namespace == "alignflow"
    with pytest.raises(ValueError, match="needs launch.nnodes >= 2"):
        load_config(None, ["launch.backend=kubernetes"])
    with pytest.raises(ValueError, match="launch.backend: kubernetes"):
        load_config(None, ["launch.nnodes=2"])


def test_the_workspace_must_be_on_the_shared_claim(tmp_path):
    from alignflow.components.stages.launch import _train_on_kubernetes

    config = load_config(None, ["launch.nnodes=2", "launch.backend=kubernetes"])
    with pytest.raises(ValueError, match=r"shared claim at /shared.*set workspace"):
        _train_on_kubernetes(config, tmp_path / "round-1.launch" / "spec.json", 1)


def _manifests() -> list[dict]:
    from alignflow.components.platform.k8s.multinode import multinode_training_manifests

    return multinode_training_manifests(training_job_name("abc", 1), "img", nnodes=2, gpus_per_node=1,
                                        spec_path="/shared/round-1.launch/spec.json")


def test_without_any_kubernetes_configuration_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(TrainingJobError, match="no Kubernetes configuration"):
        asyncio.run(run_training_job(_manifests(), timeout_s=5))


def test_an_unreachable_api_server_is_named(tmp_path, monkeypatch):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}}}]
users: [{{name: u, user: {{token: not-a-secret}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(TrainingJobError, match=f"cannot reach the Kubernetes API at https://127.0.0.1:{port}"):
        asyncio.run(run_training_job(_manifests(), timeout_s=5))
