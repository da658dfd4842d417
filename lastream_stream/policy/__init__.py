"""The decision core: pure Python and torch, no Kafka. The service, the simulator and the
benchmarks all call this same code."""
