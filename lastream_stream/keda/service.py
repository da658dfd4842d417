"""KEDA's external-scaler gRPC contract, served from the agent's recommendations.

For users who keep KEDA: the agent runs in recommend-only mode (``lastream agent --dry-run``)
and publishes what it would do to the decisions topic; this service follows that topic and
answers KEDA, which does the scaling. A ScaledObject per operator (``type: external`` or
``external-push``, metadata ``app`` and ``operator``) then follows LaStream's recommended
parallelism: the metric is the recommended number of instances and its target is 1 per
instance, so KEDA's HPA asks for exactly that many replicas.

Until the agent has recommended anything for an operator, GetMetrics fails (KEDA keeps the
replicas as they are) and IsActive says true: LaStream never scales an app to zero.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack

import grpc
from confluent_kafka import OFFSET_END, TopicPartition

from lastream_stream.kafka.clients import KafkaClients
from lastream_stream.keda import externalscaler_pb2 as pb
from lastream_stream.keda import externalscaler_pb2_grpc as pb_grpc
from lastream_stream.keda.settings import KedaSettings
from lastream_stream.settings import LastreamSettings
from lastream_stream.supervisor.reconcile import backoff_delay
from lastream_stream.supervisor.service import stop_on_signals
from lastream_stream.wire.contracts import DecisionRecord
from lastream_stream.wire.deadletter import BadMessage, parse

log = logging.getLogger(__name__)


class Recommendations:
    """The latest scheme the agent chose per app, from its decision records (outcomes carry none)."""

    def __init__(self) -> None:
        self._chosen: dict[str, dict[str, int]] = {}
        self._changed = threading.Condition()
        self.version = 0

    def update(self, record: DecisionRecord) -> None:
        if record.kind == "outcome" or not record.chosen:
            return
        with self._changed:
            if self._chosen.get(record.app) != record.chosen:
                self._chosen[record.app] = dict(record.chosen)
                self.version += 1
                self._changed.notify_all()

    def get(self, app: str, operator: str) -> int | None:
        return self._chosen.get(app, {}).get(operator)

    def wait_change(self, version: int, timeout_s: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout=timeout_s)
            return self.version


def follow_decisions(
    clients: KafkaClients, settings: LastreamSettings, keda: KedaSettings, into: Recommendations, stop: threading.Event
) -> None:
    """``read_decisions`` until ``stop``, starting again after any failure (a broker down, the
    topic missing): KEDA's answers must not freeze silently while the server looks healthy."""
    attempt = 0
    while not stop.is_set():
        try:
            read_decisions(clients, settings, keda, into, stop)
        except Exception as exc:  # anything: logged, and read again after a backoff
            attempt += 1
            delay = backoff_delay(attempt, 2.0, 30.0)
            log.error("cannot follow %s (%s); again in %.0f s", settings.topics.decisions, exc, delay)
            stop.wait(delay)


def read_decisions(
    clients: KafkaClients, settings: LastreamSettings, keda: KedaSettings, into: Recommendations, stop: threading.Event
) -> None:
    """Read the decisions topic from ``history_s`` ago, then as it grows, into ``into``."""
    topic = settings.topics.decisions
    partitions = sorted(clients.metadata().topics[topic].partitions)
    since_ms = int((time.time() - keda.history_s) * 1000)
    with clients.consumer("lastream-keda-scaler", **{"enable.auto.commit": False}) as consumer:
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        starts = consumer.offsets_for_times(wanted, timeout=settings.kafka.timeout_s)
        consumer.assign(
            [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in starts]
        )
        while not stop.is_set():
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            try:
                into.update(parse(DecisionRecord, msg.value()))
            except BadMessage as exc:
                log.warning("decisions topic offset %d: not a decision record (%s): skipped", msg.offset(), exc)


class Scaler(pb_grpc.ExternalScalerServicer):
    def __init__(self, recommendations: Recommendations, stop: threading.Event, stream_every_s: float = 30.0) -> None:
        self.recommendations = recommendations
        self.stop = stop
        self.stream_every_s = stream_every_s

    def IsActive(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> pb.IsActiveResponse:  # noqa: N802
        self._operator(request, context)
        return pb.IsActiveResponse(result=True)

    def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.ServicerContext
    ) -> Iterator[pb.IsActiveResponse]:  # noqa: N802
        """Once at once, then at every new recommendation (KEDA then asks for the metric)."""
        self._operator(request, context)
        version = self.recommendations.version
        yield pb.IsActiveResponse(result=True)
        while context.is_active() and not self.stop.is_set():
            changed = self.recommendations.wait_change(version, self.stream_every_s)
            if changed != version:
                version = changed
                yield pb.IsActiveResponse(result=True)

    def GetMetricSpec(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> pb.GetMetricSpecResponse:  # noqa: N802
        app, operator = self._operator(request, context)
        spec = pb.MetricSpec(metricName=metric_name(app, operator), targetSize=1, targetSizeFloat=1.0)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    def GetMetrics(self, request: pb.GetMetricsRequest, context: grpc.ServicerContext) -> pb.GetMetricsResponse:  # noqa: N802
        app, operator = self._operator(request.scaledObjectRef, context)
        instances = self.recommendations.get(app, operator)
        if instances is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no recommendation yet for operator {operator!r} of app {app!r}: is `lastream agent --dry-run` running, "
                "and does the app report its metrics?",
            )
        value = pb.MetricValue(metricName=metric_name(app, operator), metricValue=instances, metricValueFloat=instances)
        return pb.GetMetricsResponse(metricValues=[value])

    @staticmethod
    def _operator(ref: pb.ScaledObjectRef, context: grpc.ServicerContext) -> tuple[str, str]:
        app, operator = ref.scalerMetadata.get("app"), ref.scalerMetadata.get("operator")
        if not app or not operator:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ScaledObject {ref.namespace}/{ref.name}: its trigger's metadata must name `app` and `operator`",
            )
        return app, operator


def metric_name(app: str, operator: str) -> str:
    return f"lastream-{app}-{operator}"


def serve(
    settings: LastreamSettings, keda: KedaSettings, stop: threading.Event, bound: list[int] | None = None
) -> None:
    """Serve until ``stop`` is set; the port actually bound is appended to ``bound``."""
    recommendations = Recommendations()
    clients = KafkaClients(settings.kafka)
    # Each StreamIsActive of an external-push ScaledObject holds a thread for as long as KEDA
    # keeps it open: room for many of them beside the unary calls.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=keda.threads))
    pb_grpc.add_ExternalScalerServicer_to_server(Scaler(recommendations, stop), server)
    port = server.add_insecure_port(f"{keda.host}:{keda.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {keda.host}:{keda.port}: set LASTREAM_KEDA_PORT to a free port")
    follower = threading.Thread(
        target=follow_decisions, args=(clients, settings, keda, recommendations, stop), name="decisions", daemon=True
    )
    follower.start()
    server.start()
    log.info("KEDA external scaler on %s:%d, following %s", keda.host, port, settings.topics.decisions)
    if bound is not None:
        bound.append(port)
    try:
        stop.wait()
    finally:
        server.stop(grace=2).wait()
        follower.join(timeout=10)


def run(settings: LastreamSettings, keda: KedaSettings | None = None, stop: threading.Event | None = None) -> None:
    """Serve KEDA until ``stop`` is set; without it, until SIGINT or SIGTERM."""
    keda = keda or KedaSettings()
    with ExitStack() as stack:
        if stop is None:
            stop = threading.Event()
            stack.enter_context(stop_on_signals(stop))
        serve(settings, keda, stop)
