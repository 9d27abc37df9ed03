"""Row schemas, validated JSONL IO and the verifiable arithmetic task."""
