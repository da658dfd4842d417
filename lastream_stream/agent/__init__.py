"""The agent service: the per-app decision cycle (``controller``: windows, guard rails,
stability, outcomes) and the service that feeds it from Kafka and publishes what it
decides (``service``)."""
