"""Prefect tasks: thin wrappers over components.steps with retries, caching and tracking."""
