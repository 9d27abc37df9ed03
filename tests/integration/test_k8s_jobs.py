"""The GPU work pool's job template, rendered through prefect-kubernetes' own code and validated
against the official Kubernetes OpenAPI schema (strict: unknown fields fail). No API server
runs here; these tests check what a worker would submit, not that a cluster ran it."""

from __future__ import annotations

import copy

import pytest

from alignflow.components.platform.k8s.manifests import ManifestError, check_job_hardening, pod_spec, validate_manifest
from tests.support.k8s_render import load_template, render_job

pytestmark = pytest.mark.integration

GPU_NODE = {"gpu_count": 8, "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                            {"key": "dedicated", "operator": "Equal", "value": "alignment", "effect": "NoSchedule"}],
            "image": "registry.example.com/alignflow:0.1.0", "memory_limit": "200Gi",
            "command": "alignflow run -s rounds.n_rounds=3"}


@pytest.mark.parametrize("variables", [{}, GPU_NODE, {"gpu_count": 0, "tolerations": [], "namespace": "ci"}],
                         ids=["defaults", "8-gpu-node", "cpu-only"])
def test_gpu_template_renders_valid_hardened_jobs(prefect_harness, variables):
    job = render_job(load_template(), variables)
    validate_manifest(job, "gpu-base-job-template")
    check_job_hardening(job, "gpu-base-job-template")
    spec = pod_spec(job)
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == variables.get("gpu_count", 0)
    assert spec["nodeSelector"] == variables.get("node_selector", {})
    assert spec["tolerations"] == variables.get("tolerations", [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    assert container["envFrom"] == [{"secretRef": {"name": "alignflow-credentials"}}]
    assert {v["mountPath"] for v in container["volumeMounts"]} == {"/tmp", "/home/alignflow", "/dev/shm"}
    if "command" in variables:
        assert container["args"] == variables["command"].split()
    assert job["metadata"]["namespace"] == variables.get("namespace", "alignflow")


def test_a_broken_template_fails_validation_naming_the_field(prefect_harness):
    template = load_template()
    # prefect-kubernetes' stock template puts these on the pod spec, where Kubernetes has no such field
    broken = copy.deepcopy(template)
    broken["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["completions"] = 1
    with pytest.raises(ManifestError, match=r"spec\.template\.spec.*'completions' was unexpected"):
        validate_manifest(render_job(broken, {}), "broken")
    typo = copy.deepcopy(template)
    pod = typo["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["tolerationz"] = pod.pop("tolerations")
    with pytest.raises(ManifestError, match="tolerationz"):
        validate_manifest(render_job(typo, {}), "typo")
    with pytest.raises(ManifestError, match="backoffLimit"):
        validate_manifest(render_job(template, {"backoff_limit": "never"}), "bad value")


def test_hardening_rejects_root_writable_jobs_and_literal_credentials(prefect_harness):
    job = render_job(load_template(), {"env": {"AWS_SECRET_ACCESS_KEY": "hunter2"}})
    validate_manifest(job, "schema-valid")  # the schema allows it; the platform's rules do not
    with pytest.raises(ManifestError, match="AWS_SECRET_ACCESS_KEY' holds a literal value"):
        check_job_hardening(job, "job")
    template = load_template()
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    with pytest.raises(ManifestError, match="readOnlyRootFilesystem is not true"):
        check_job_hardening(render_job(template, {}), "job")


def test_every_gpu_deployment_in_prefect_yaml_renders_a_valid_job_and_a_valid_config(prefect_harness):
    """What `prefect deploy` would register: its job variables through the template, its parameters
    through the config schema; a multi-GPU deployment launches one torchrun rank per GPU."""
    from pathlib import Path

    import yaml

    from alignflow.components.config import PipelineConfig

    deployments = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())["deployments"]
    gpu = [d for d in deployments if d["work_pool"]["name"] == "alignflow-gpu"]
    assert len(gpu) >= 4 and any(d["work_pool"]["job_variables"]["gpu_count"] > 1 for d in gpu)
    for deployment in gpu:
        variables = deployment["work_pool"]["job_variables"]
        job = render_job(load_template(), variables, flow_run_name=deployment["name"])
        validate_manifest(job, deployment["name"])
        check_job_hardening(job, deployment["name"])
        assert pod_spec(job)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == variables["gpu_count"]
        config = PipelineConfig.model_validate(deployment["parameters"]["config"])
        if variables["gpu_count"] > 1:
            assert config.launch.nproc_per_node == variables["gpu_count"], deployment["name"]
