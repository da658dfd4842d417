"""The Kubernetes executor: applies LaStream's scaling commands to the Deployments and
StatefulSets an app runs as, through their ``scale`` subresource (``backend.py``), one
process per cluster or set of namespaces, two replicas of it kept apart by a Lease
(``lease.py``, ``executor.py``)."""
