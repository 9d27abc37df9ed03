"""Prefect flows: compose tasks into rounds and pipelines; no ML code here."""
