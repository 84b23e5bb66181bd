"""Development tooling: what `make run`, the tests and the benchmarks use, never the worker.

* ``kafka`` / ``kafka_commands``  fetch and run Apache Kafka (KRaft) locally;
* ``collector``                   the local VES collector (HTTP, schema checks, fault injection);
* ``replay``                      publish the recorded collectd capture as write_kafka does;
* ``collectd_runner``             run Debian's collectd with write_kafka against a broker;
* ``run``                         ``ves-streams run``: all of the above plus a worker.

The worker (``ves_streams.app`` and everything it imports) never imports
this package; ``tests/test_layout.py`` pins that.
"""
