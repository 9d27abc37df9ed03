"""Every shared-service manifest in infra/k8s validates against the strict Kubernetes OpenAPI
schema and runs hardened; the kustomization applies all of them; a broken manifest fails."""

import copy
from pathlib import Path

import pytest
import yaml

from alignflow.components.platform.k8s.manifests import (
    ManifestError,
    check_job_hardening,
    load_manifests,
    validate_manifest,
)

SERVICES = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "services"
WORKLOADS = ("Deployment", "StatefulSet", "Job", "Pod")


def _objects():
    return list(load_manifests(SERVICES))


def test_every_service_manifest_is_schema_valid_and_hardened():
    objects = _objects()
    kinds = {o["kind"] for _, o in objects}
    assert {"Namespace", "StatefulSet", "Deployment", "Service", "Role", "RoleBinding", "ServiceAccount"} <= kinds
    for where, obj in objects:
        validate_manifest(obj, where)
        if obj["kind"] in WORKLOADS:
            check_job_hardening(obj, where)
    names = {(o["kind"], o["metadata"]["name"]) for _, o in objects}
    assert {("Deployment", "mlflow"), ("StatefulSet", "postgres"), ("Deployment", "prefect-server"),
            ("Deployment", "prefect-worker")} <= names


def test_the_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((SERVICES / "kustomization.yaml").read_text())
    on_disk = {p.name for p in SERVICES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk


def test_no_secret_value_is_written_into_a_manifest():
    for where, obj in _objects():
        assert obj["kind"] != "Secret", f"{where}: Secrets are created out of band, never committed"
        text = yaml.safe_dump(obj)
        assert "password:" not in text.lower().replace("postgres_password", ""), where


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["spec"].__setitem__("replicas", "one"), "spec.replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].__setitem__("containerPort", "five"),
     "containerPort"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("portz", []), "portz"),
])
def test_a_broken_manifest_fails_naming_the_field(mutate, field):
    where, mlflow = next((w, o) for w,
                         o in _objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    broken = copy.deepcopy(mlflow)
    mutate(broken)
    with pytest.raises(ManifestError, match=field):
        validate_manifest(broken, where)


def test_hardening_fails_for_a_root_pod():
    _, mlflow = next((w, o) for w, o in _objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    rooted = copy.deepcopy(mlflow)
    rooted["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
    with pytest.raises(ManifestError, match="runAsNonRoot"):
        check_job_hardening(rooted, "mlflow.yaml")


def test_multinode_training_job_and_its_headless_service_are_valid_and_agree():
    from alignflow.components.platform.k8s.multinode import RENDEZVOUS_PORT, multinode_training_manifests

    service, job = multinode_training_manifests("train-r1-abc", "registry.example.com/alignflow:0.1.0", nnodes=4,
                                                gpus_per_node=8, spec_path="/shared/round-1.launch/spec.json")
    for manifest in (service, job):
        validate_manifest(manifest, "multinode")
    check_job_hardening(job, "multinode")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    pod = spec["template"]["spec"]
    # pod 0's DNS name exists only if the pod's subdomain is the headless Service selecting it
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    command = pod["containers"][0]["command"][-1]
    assert "--nnodes=4" in command and "--nproc-per-node=8" in command and "$JOB_COMPLETION_INDEX" in command
    assert f"train-r1-abc-0.train-r1-abc.alignflow.svc:{RENDEZVOUS_PORT}" in command
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    with pytest.raises(ValueError, match="nnodes >= 2"):
        multinode_training_manifests("x", "img", nnodes=1, gpus_per_node=8, spec_path="/shared/s.json")
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["subdomian"] = "typo"  # strict: an unknown field fails
    with pytest.raises(ManifestError, match="subdomian"):
        validate_manifest(broken, "multinode")
