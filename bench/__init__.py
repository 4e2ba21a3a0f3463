"""Benchmarks comparing taskq with Celery, Dramatiq and raw kombu on one RabbitMQ.

Run ``python -m bench.compare --help``; ``bench/README.md`` explains the columns.
"""
