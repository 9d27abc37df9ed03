"""``models:/`` URIs of the MLflow registry, parsed without importing MLflow (the config checks them
at load time; ``platform/registry.py`` resolves them)."""

from __future__ import annotations

MODEL_URI_FORM = "models:/<registered model>@<alias> or models:/<registered model>/<version number>"


def parse_version_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name/N`` → (name, "N"); anything else → None."""
    body = uri.removeprefix("models:/") if uri.startswith("models:/") else ""
    name, _, number = body.rpartition("/")
    return (name, number) if name and number.isdigit() else None


def parse_model_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name@alias`` → (name, alias); ``models:/name/N`` → (name, "N"), a version pinned by
    number (``registry.version_for_alias`` reads an all-digit alias as one); anything else (a
    directory) → None.

    Raises:
        ValueError: a ``models:/`` URI without a name and an alias or version number.
    """
    if not uri.startswith("models:/"):
        return None
    body = uri.removeprefix("models:/")
    if "@" not in body and (pinned := parse_version_uri(uri)) is not None:
        return pinned
    if "@" not in body or not all(body.split("@", 1)):
        raise ValueError(f"model URI '{uri}': expected {MODEL_URI_FORM}")
    name, alias = body.split("@", 1)
    return name, alias
