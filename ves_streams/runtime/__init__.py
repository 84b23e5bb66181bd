"""The stage runtime: what runs the stages on Kafka.

* ``outputs``   the typed value a stage's handler returns (:class:`StageOutput`);
* ``loop``      :class:`StageLoop`: batched consume -> handle -> produce -> ack -> commit,
  one consumer group per stage, pause-and-poll through outages;
* ``side_loop`` :class:`SideLoop`: a second event loop on a thread of its own, for the
  stages a burst must not delay (faults and the sink);
* ``memory``    fewer glibc malloc arenas for the worker's process;
* ``kafka``     :class:`KafkaConnection`: the broker list and security, once for every client;
* ``faust_compat`` every use of Faust's non-public API, checked at start;
* ``producing`` many records to one partition through aiokafka's batch API.

No module here knows what a stage does: the handlers live in ``ves_streams.stages``.
"""
