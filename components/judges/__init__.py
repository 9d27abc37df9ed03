"""LLM-as-judge (ALGORITHMS.md §3): rubric templates versioned by hash, judgments parsed
strictly (rationale first, then a Likert score; anything else is recorded as malformed, never
scored), and a persistent judgment cache shared across rounds."""
