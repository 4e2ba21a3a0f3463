"""Tests against a real broker (RabbitMQ, the embedded one) or real processes: workers, the CLI, builds."""
