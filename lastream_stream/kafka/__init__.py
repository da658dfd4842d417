"""Kafka plumbing: the client layer (one place for librdkafka options and broker probing),
the metrics reporter apps embed, reading the control topic, and the local broker. Knows
the wire messages, nothing of how decisions are made."""
