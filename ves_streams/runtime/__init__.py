"""The stage runtime: what runs the stages on Kafka."""
