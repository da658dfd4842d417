"""Scenarios from a JSON file: the documented example, and malformed files refused by field."""

from __future__ import annotations

import copy
import json

import pytest

from lastream_stream.sim import Simulator, Steps
from lastream_stream.sim.scenario_file import ScenarioFileError, load, parse

EXAMPLE = [
    {
        "name": "orders",
        "source_rate": 4000,
        "schedule": [[0, 1.0], [150, 2.0]],
        "restart_s": 5,
        "operators": [
            {"name": "source", "source": True, "parallelism": 2},
            {
                "name": "parse",
                "upstreams": ["source"],
                "true_rate": 900,
                "selectivity": 0.9,
                "partitions": 16,
                "parallelism": 4,
            },
            {
                "name": "score",
                "upstreams": ["parse"],
                "capacity": {"1": 500, "2": 950, "4": 1700},
                "partitions": 16,
                "parallelism": 1,
            },
        ],
    }
]


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(EXAMPLE))
    (scenario,) = load(path)
    assert scenario.name == "orders" and scenario.horizon_s == 300.0 and scenario.downtime_s == 5.0
    assert scenario.schedule == Steps(4000.0, ((0.0, 1.0), (150.0, 2.0)))
    source, parse_op, score = scenario.operators
    # Twice what the source emits at the peak, 8000/s, over its 2 instances.
    assert source.is_source and source.capacity(2) == pytest.approx(16000.0)
    assert (parse_op.true_rate, parse_op.selectivity, parse_op.partitions, parse_op.parallelism) == (900.0, 0.9, 16, 4)
    assert score.capacity_table == ((1, 500.0), (2, 950.0), (4, 1700.0))
    sim = Simulator(scenario)
    # parse needs 5 for 4000/s (4000 / 900). score takes 3600/s; past 4 instances each adds
    # 375/s to 1700: 3575 at 9, 3950 at 10.
    assert sim.oracle() == {"source": 2, "parse": 5, "score": 10}


def test_optional_fields_shares_and_host_cores():
    data = copy.deepcopy(EXAMPLE)
    data[0].update(horizon_s=60, host_cores=4, tags=["mine"])
    del data[0]["schedule"]
    data[0]["operators"].insert(1, {"name": "clicks", "source": True, "share": 3})
    data[0]["operators"][2]["upstreams"] = ["source", "clicks"]
    (scenario,) = parse(data)
    assert scenario.horizon_s == 60.0 and scenario.host_cores == 4.0 and scenario.tags == {"mine"}
    assert scenario.required_rates(4000.0)["source"] == pytest.approx(1000.0)
    assert scenario.required_rates(4000.0)["clicks"] == pytest.approx(3000.0)


def broken(change) -> list[dict]:
    data = copy.deepcopy(EXAMPLE)
    change(data[0])
    return data


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda s: s.pop("source_rate"), "scenario 0 (orders): source_rate: Field required"),
        (
            lambda s: s["operators"][1].update(true_rate="fast"),
            "scenario 0 (orders): operators[1] (parse).true_rate: Input should be a valid number",
        ),
        (
            lambda s: s["operators"][2].update(upstreams=["parsed"]),
            "operators[2] (score).upstreams: unknown operator 'parsed'",
        ),
        (
            lambda s: s["operators"][1].pop("true_rate"),
            "scenario 0 (orders): operators[1] (parse): true_rate or capacity: one is required",
        ),
        (lambda s: s["operators"][1].update(speed=3), "operators[1] (parse).speed: Extra inputs are not permitted"),
        (
            lambda s: s.update(schedule=[[0, -1.0]]),
            "scenario 0 (orders): schedule[0][1]: Input should be greater than or equal to 0",
        ),
        (
            lambda s: s["operators"][2].update(capacity={"1": 500, "2": 400}),
            "scenario 0 (orders): score: capacity_table decreases",
        ),
        (
            lambda s: s["operators"][1].update(parallelism=20),
            "scenario 0 (orders): parse: initial parallelism 20 outside [1, 16]",
        ),
        (lambda s: s["operators"][1].update(upstreams=["score"]), "scenario 0 (orders): operator graph has a cycle"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_scenario_and_the_field(change, where):
    with pytest.raises(ScenarioFileError) as refused:
        parse(broken(change))
    assert where in str(refused.value)


def test_a_file_that_is_not_a_json_list_is_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"name": "orders"')
    with pytest.raises(ScenarioFileError, match="not JSON"):
        load(path)
    with pytest.raises(ScenarioFileError, match="the file: Input should be a valid list"):
        parse({"name": "orders"})
