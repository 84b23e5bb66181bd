"""Benchmarks of ves-streams, each with its baseline measured in the same run.

``python -m bench`` (``make bench``) is the pipeline benchmark: one local
Kafka broker, the recorded collectd capture replicated to N hosts, the
bare aiokafka passthrough (:mod:`bench.passthrough`) as the baseline, and
ves-streams workers and the local VES collector as subprocesses. It prints
a table, and writes ``bench/results/bench-<timestamp>.json`` and ``.png``.

Modules, in the order a run uses them:

``broker``       the run's single Kafka node; topics, end offsets, group lag
``load``         the capture for N hosts: preloaded at full speed, or published
                 at the realistic rate with stamped notifications
``procs``        worker / collector subprocesses; peak RSS and CPU from /proc
``passthrough``  the baseline process (consume -> orjson -> produce)
``throughput``   ingest phase: time a fresh consumer group on a ready backlog
``latency``      realistic-rate phase: fault and measurement latency at the collector
``report``       table, ratios to the baseline, JSON and the PNG plot

``bench/render_bench.py`` is a separate micro-benchmark of the rule engine.
"""
