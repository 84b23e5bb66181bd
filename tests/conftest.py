"""Shared test configuration.

Fixtures live in ``tests/plugins/`` (one module per real component: Kafka
brokers, the VES collector, collectd) and are loaded here so every test
directory can use them.
"""

pytest_plugins = [
    "tests.plugins.kafka",
    "tests.plugins.collector",
    "tests.plugins.collectd",
]
