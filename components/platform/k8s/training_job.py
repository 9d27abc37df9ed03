"""Submit a multi-node training Job (and its headless Service) to Kubernetes and watch it to its end,
from the task that needs its result. kubernetes_asyncio is the client prefect-kubernetes already brings.

Idempotent by name: the name comes from the config's content hash and the round, so a flow re-run after a
crash finds the Job its first attempt submitted and watches it instead of starting a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal


class TrainingJobError(RuntimeError):
    pass


@dataclass(frozen=True)
class JobOutcome:
    state: Literal["running", "succeeded", "failed"]
    detail: str


def training_job_name(content_hash: str, round_index: int) -> str:
    """A DNS-1123 label (≤ 63 chars, the Service and pod hostnames derive from it) stable for one
    config and round."""
    suffix = hashlib.sha256(f"{content_hash}:{round_index}".encode()).hexdigest()[:10]
    return f"alignflow-train-r{round_index}-{suffix}"


def job_outcome(job: dict[str, Any]) -> JobOutcome:
    """From a Job as the API serializes it (camelCase). An Indexed Job with maxFailedIndexes 0 first
    gets FailureTarget, then Failed once its pods are gone: either means the run is lost."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    completions = spec.get("completions") or 1
    true = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Failed", "FailureTarget"):
        if kind in true:
            condition = true[kind]
            failed_indexes = status.get("failedIndexes")
            return JobOutcome("failed", f"{condition.get('reason', kind)}: {condition.get('message', '')}"
                              + (f" (failed node indexes {failed_indexes})" if failed_indexes else ""))
    succeeded = status.get("succeeded") or 0
    if "Complete" in true or succeeded >= completions:
        return JobOutcome("succeeded", f"{succeeded}/{completions} nodes succeeded")
    return JobOutcome("running", f"{status.get('active') or 0} active, {succeeded}/{completions} succeeded, "
                                 f"{status.get('failed') or 0} failed")


def pod_failures(pods: list[dict[str, Any]]) -> list[str]:
    """One line per terminated-with-error container: what an operator reads first."""
    lines = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                lines.append(f"{pod['metadata']['name']}/{container['name']}: exit {terminated.get('exitCode')} "
                             f"{terminated.get('reason', '')} {(terminated.get('message') or '')[-500:]}".rstrip())
    return lines


async def _load_configuration() -> None:
    from kubernetes_asyncio import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            # the library reads KUBECONFIG once, at import: read it now
            await config.load_kube_config(config_file=os.environ.get("KUBECONFIG", "~/.kube/config"))
        except (config.ConfigException, FileNotFoundError, TypeError) as error:
            raise TrainingJobError("no Kubernetes configuration: not in a pod (no service account) and no usable "
                                   f"kubeconfig (KUBECONFIG or ~/.kube/config): {error}") from error


async def _create(create: Callable, read: Callable, namespace: str, manifest: dict[str, Any]) -> tuple[Any, bool]:
    """Create, or find the object an earlier attempt created (409): (object, created)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        return await create(namespace, manifest), True
    except ApiException as error:
        if error.status != 409:
            raise
    return await read(manifest["metadata"]["name"], namespace), False


async def run_training_job(manifests: list[dict[str, Any]], timeout_s: float, poll_s: float = 15.0,
                           log: Callable[[str], None] = print) -> JobOutcome:
    """[Service, Job] from ``k8s_multinode.multinode_training_manifests``: create both (or adopt the ones
    an earlier attempt of this flow created) and poll the Job until it succeeds, fails or times out.
    A failure raises with the Job's condition and each failed container's exit; a timeout leaves the
    Job running and says how to remove it."""
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException

    service, job = manifests
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    await _load_configuration()
    async with client.ApiClient() as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        try:
            await _create(core.create_namespaced_service, core.read_namespaced_service, namespace, service)
            _, created = await _create(batch.create_namespaced_job, batch.read_namespaced_job, namespace, job)
        except ApiException as error:
            raise TrainingJobError(f"Kubernetes refused job {namespace}/{name}: {error.status} {error.reason}: "
                                   f"{(error.body or '')[:1000]}") from error
        except OSError as error:  # aiohttp's connection errors subclass it
            raise TrainingJobError(f"cannot reach the Kubernetes API at {api.configuration.host}: {error}") from error
        log(f"job {namespace}/{name}: {'submitted' if created else 'found from an earlier attempt, watching it'}")
        deadline, last = time.monotonic() + timeout_s, ""
        while True:
            status = api.sanitize_for_serialization(await batch.read_namespaced_job_status(name, namespace))
            outcome = job_outcome(status)
            if outcome.detail != last:
                log(f"job {namespace}/{name}: {outcome.state}, {outcome.detail}")
                last = outcome.detail
            if outcome.state == "succeeded":
                return outcome
            if outcome.state == "failed":
                pods = await core.list_namespaced_pod(namespace, label_selector=f"alignflow/job={name}")
                failures = pod_failures(api.sanitize_for_serialization(pods).get("items", []))
                raise TrainingJobError(f"job {namespace}/{name} failed: {outcome.detail}\n" + "\n".join(failures)
                                       + f"\nto retry: kubectl -n {namespace} delete job {name}, then re-run the flow")
            if time.monotonic() > deadline:
                raise TrainingJobError(f"job {namespace}/{name} still {outcome.detail} after {timeout_s:.0f} s; it is "
                                       f"left running (kubectl -n {namespace} delete job {name} to stop it)")
            await asyncio.sleep(poll_s)
