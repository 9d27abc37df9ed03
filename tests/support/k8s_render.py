"""A Kubernetes work pool's job for a flow run, rendered by prefect-kubernetes' own code — the
same ``from_template_and_values`` + ``prepare_for_flow_run`` its worker calls before it creates the
Job — so what tests validate is what a worker would submit. Needs a Prefect API (block and
variable references are resolved through it); creates nothing anywhere."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

GPU_TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "work-pool" / "gpu-base-job-template.json"


def load_template(path: Path = GPU_TEMPLATE) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def render_job(template: dict[str, Any], job_variables: dict[str, Any], flow_run_name: str = "render-check"
               ) -> dict[str, Any]:
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    configuration = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(template, job_variables))
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name=flow_run_name))
    return configuration.job_manifest
