"""alignflow: workflow-orchestrated alignment rounds with lineage."""
