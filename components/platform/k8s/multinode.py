"""Multi-node preference training on Kubernetes without an operator: an Indexed Job whose pods are
the torchrun nodes, behind a headless Service that gives pod 0 a stable DNS name for the c10d
rendezvous. Each pod runs ``torchrun --nnodes=N --node-rank=$JOB_COMPLETION_INDEX`` on the same
launch spec (``steps.train_round_launched`` writes it; it must be on storage every pod mounts).

Only manifests are built here; tests validate them against the Kubernetes OpenAPI schema.
"""

from __future__ import annotations

from typing import Any

RENDEZVOUS_PORT = 29400
SHARED_MOUNT = "/shared"  # where every node mounts the shared claim; the launch spec must lie under it


def multinode_training_manifests(name: str, image: str, nnodes: int, gpus_per_node: int, spec_path: str,
                                 namespace: str = "alignflow", shared_claim: str = "alignflow-shared",
                                 credentials_secret: str = "alignflow-credentials",
                                 node_selector: dict[str, str] | None = None,
                                 tolerations: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """[headless Service, Indexed Job]; ``spec_path`` lies on the PersistentVolumeClaim ``shared_claim``
    (ReadWriteMany), mounted at /shared in every pod."""
    if nnodes < 2:
        raise ValueError("a multi-node job needs nnodes >= 2; one node is launch.nproc_per_node in the flow's pod")
    labels = {"app.kubernetes.io/name": "alignflow-train", "alignflow/job": name}
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": "None", "selector": labels,
                 "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
                 # the rendezvous must resolve pod 0 before it reports ready
                 "publishNotReadyAddresses": True},
    }
    # Indexed Job pods are named <job>-<index>-<suffix> with hostname <job>-<index> under the subdomain
    endpoint = f"{name}-0.{name}.{namespace}.svc:{RENDEZVOUS_PORT}"
    torchrun = (f"exec python -m torch.distributed.run --nnodes={nnodes} --nproc-per-node={gpus_per_node} "
                f"--node-rank=$JOB_COMPLETION_INDEX --rdzv-backend=c10d --rdzv-endpoint={endpoint} "
                f"--rdzv-id={name} -m components.train_entry {spec_path}")
    container = {
        "name": "trainer", "image": image, "command": ["sh", "-c", torchrun],
        "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}],
        "env": [{"name": "ALIGNFLOW_DEVICE", "value": "cuda"}, {"name": "NCCL_DEBUG", "value": "WARN"}],
        "envFrom": [{"secretRef": {"name": credentials_secret}}],
        "resources": {"limits": {"nvidia.com/gpu": gpus_per_node}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "completionMode": "Indexed", "completions": nnodes, "parallelism": nnodes,
            # one node lost means the rendezvous cannot complete: fail the whole job, retry it whole
            "backoffLimitPerIndex": 0, "maxFailedIndexes": 0,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "subdomain": name, "restartPolicy": "Never", "serviceAccountName": "alignflow-runner",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "nodeSelector": node_selector or {},
                    "tolerations": tolerations if tolerations is not None else [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [container],
                    "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": shared_claim}},
                                {"name": "tmp", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
                },
            },
        },
    }
    return [service, job]
