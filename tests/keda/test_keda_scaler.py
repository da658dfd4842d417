"""KEDA's external-scaler contract, called over gRPC by a client generated from the same
proto, answers with the agent's latest recommendation on the decisions topic."""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path

import grpc
import pytest
from control_log import wait_for

from lastream_stream.keda import externalscaler_pb2 as pb
from lastream_stream.keda import externalscaler_pb2_grpc as pb_grpc
from lastream_stream.keda.service import serve
from lastream_stream.keda.settings import KedaSettings
from lastream_stream.wire.contracts import DecisionRecord

ROOT = Path(__file__).resolve().parents[2]


def recommend(clients, settings, app: str, kind: str = "recommendation", **chosen: int) -> None:
    record = DecisionRecord(app=app, decision_id=uuid.uuid4().hex, kind=kind, policy="lastream", chosen=chosen)
    with clients.producer() as producer:
        producer.produce(settings.topics.decisions, key=app.encode(), value=record.to_bytes())


@pytest.fixture
def scaler(settings):
    stop, bound = threading.Event(), []
    keda = KedaSettings(port=0)
    thread = threading.Thread(target=serve, args=(settings, keda, stop, bound), daemon=True)
    thread.start()
    wait_for(lambda: bound, timeout_s=30, what="the scaler to listen")
    with grpc.insecure_channel(f"127.0.0.1:{bound[0]}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


def ref(app: str, operator: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(
        name=f"{app}-{operator}", namespace="apps", scalerMetadata={"app": app, "operator": operator}
    )


def metric(stub, app: str, operator: str) -> float:
    request = pb.GetMetricsRequest(scaledObjectRef=ref(app, operator), metricName=f"lastream-{app}-{operator}")
    return stub.GetMetrics(request, timeout=5).metricValues[0].metricValueFloat


def test_keda_follows_the_latest_recommendation(scaler, clients, settings):
    app = f"app-{uuid.uuid4().hex[:8]}"
    spec = scaler.GetMetricSpec(ref(app, "parse"), timeout=5).metricSpecs
    assert [(s.metricName, s.targetSizeFloat) for s in spec] == [(f"lastream-{app}-parse", 1.0)]
    with pytest.raises(grpc.RpcError) as unknown:
        metric(scaler, app, "parse")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "no recommendation yet" in unknown.value.details()
    assert scaler.IsActive(ref(app, "parse"), timeout=5).result  # never to zero on ignorance

    stream = scaler.StreamIsActive(ref(app, "parse"), timeout=60)
    assert next(stream).result
    recommend(clients, settings, app, parse=4, count=2)
    assert next(stream).result  # pushed at the new recommendation
    assert metric(scaler, app, "parse") == 4 and metric(scaler, app, "count") == 2

    recommend(clients, settings, app, kind="outcome")  # carries no scheme: changes nothing
    recommend(clients, settings, app, kind="hold", parse=2, count=2)
    wait_for(lambda: metric(scaler, app, "parse") == 2, timeout_s=15, what="the new recommendation")
    stream.cancel()


def test_a_scaled_object_without_app_and_operator_is_told_what_is_missing(scaler):
    bad = pb.ScaledObjectRef(name="orders", namespace="apps", scalerMetadata={"app": "shop"})
    with pytest.raises(grpc.RpcError) as error:
        scaler.GetMetricSpec(bad, timeout=5)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "apps/orders" in error.value.details() and "`operator`" in error.value.details()


def test_the_checked_in_generated_code_matches_the_proto(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "gen-keda.sh"), str(tmp_path)], check=True, cwd=ROOT)
    for name in ("externalscaler_pb2.py", "externalscaler_pb2_grpc.py"):
        checked_in = (ROOT / "lastream_stream" / "keda" / name).read_text()
        assert (tmp_path / name).read_text() == checked_in, f"{name} drifted: run scripts/gen-keda.sh"
