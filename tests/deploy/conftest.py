"""The worker fixtures of ``tests/agents`` (a real broker, real workers), for the scrape test."""

from tests.agents.conftest import kafka_io, names, start_worker, worker_dir  # noqa: F401 - fixtures
