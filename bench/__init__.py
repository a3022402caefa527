"""Benchmarks of Conveyor's engine, each measured beside raw Celery in the same run.

Run them from the project root as modules (``uv run python -m bench.throughput``) or all at
once with ``make bench``; bench/README.md says what each one measures.
"""
