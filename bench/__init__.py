"""Pully's own benchmark: ``python -m bench --help`` (see docs/performance.md)."""
