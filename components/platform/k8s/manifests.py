"""Kubernetes manifests checked without a cluster: every object validated against the official
OpenAPI schema of a pinned Kubernetes version (``kubernetes-validate``'s bundled, strict
schemas — unknown fields fail), plus the platform's own rules for jobs it runs (non-root,
read-only root filesystem, credentials only from Secrets). No API server runs here, so this is
as far as "it deploys" can be checked; nothing pretends a cluster ran."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import yaml

KUBERNETES_VERSION = "1.33.0"  # the oldest minor still supported upstream when this was written
_CREDENTIAL_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY|ACCESS_KEY)", re.IGNORECASE)


class ManifestError(ValueError):
    """A manifest is invalid; the message names the file (or object) and the field."""


def load_manifests(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for every object in a YAML file or a directory of them."""
    files = sorted(Path(path).rglob("*.yaml")) if Path(path).is_dir() else [Path(path)]
    for file in files:
        if file.name == "kustomization.yaml":
            continue
        for index, doc in enumerate(yaml.safe_load_all(file.read_text(encoding="utf-8-sig"))):
            if doc:
                yield f"{file}#{index}", doc


def validate_manifest(manifest: dict[str, Any], where: str = "manifest",
                      version: str = KUBERNETES_VERSION) -> None:
    """Strict OpenAPI validation (CRDs: see ``validate_custom_resource``)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except ValidationError as err:
        path = ".".join(str(p) for p in err.path) or "<root>"
        raise ManifestError(f"{where}: {manifest.get('kind')} '{_name(manifest)}': field '{path}': "
                            f"{err.message}") from None
    except SchemaNotFoundError as err:
        raise ManifestError(f"{where}: no Kubernetes {version} schema for {manifest.get('apiVersion')}/"
                            f"{manifest.get('kind')} ({err}); a custom resource needs its CRD schema") from None


def validate_custom_resource(manifest: dict[str, Any], crd_schema: dict[str, Any], where: str) -> None:
    """A custom resource (e.g. a Kubeflow TrainJob) against its CRD's openAPIV3Schema."""
    import jsonschema

    try:
        jsonschema.validate(manifest, crd_schema)
    except jsonschema.ValidationError as err:
        path = ".".join(str(p) for p in err.absolute_path) or "<root>"
        raise ManifestError(f"{where}: {manifest.get('kind')} '{_name(manifest)}': field '{path}': "
                            f"{err.message}") from None


def _name(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata") or {}
    return meta.get("name") or meta.get("generateName") or "?"


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    kind = manifest.get("kind")
    if kind == "Pod":
        return manifest["spec"]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        return manifest["spec"]["template"]["spec"]
    raise ManifestError(f"{kind} has no pod template")


def check_job_hardening(manifest: dict[str, Any], where: str) -> None:
    """What every alignflow job pod must do: run as non-root, read-only root filesystem, no
    privilege escalation, and take credentials from Secrets only — never as literal env values."""
    spec = pod_spec(manifest)
    problems = []
    if not (spec.get("securityContext") or {}).get("runAsNonRoot"):
        problems.append("pod securityContext.runAsNonRoot is not true")
    for container in spec.get("containers", []):
        sc = container.get("securityContext") or {}
        name = container.get("name")
        if not sc.get("readOnlyRootFilesystem"):
            problems.append(f"container '{name}': readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation", True):
            problems.append(f"container '{name}': allowPrivilegeEscalation is not false")
        for env in container.get("env") or []:
            if _CREDENTIAL_NAME.search(env.get("name", "")) and "value" in env:
                problems.append(f"container '{name}': env '{env['name']}' holds a literal value; use a Secret")
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems))
