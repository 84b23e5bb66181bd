"""The stage runtime: what runs the stages on Kafka.

Faust and mode as this project uses them; :mod:`.faust_compat` is the one
place that touches their non-public API.
"""
