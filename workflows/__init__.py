"""Temporal workflow classes: deterministic orchestration only."""
