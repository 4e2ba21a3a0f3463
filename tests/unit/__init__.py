"""Tests that need no broker and start no process: tests/unit/conftest.py makes sure of it."""
