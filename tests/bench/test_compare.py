"""Per-tag medians, the suite choice, and ``lastream bench --scenario-file`` end to end."""

from __future__ import annotations

import json
import statistics

import pytest
from click.testing import CliRunner

from lastream_stream.bench import BenchSettings, run_episode
from lastream_stream.bench.compare import chosen_suite, summarise
from lastream_stream.bench.runner import policy_factory
from lastream_stream.sim import Constant, Scenario, SimOperator, scenarios
from lastream_stream.tools.cli import main

SETTINGS = BenchSettings(decision_interval_s=10.0, horizon_s=20.0)


def tagged(name: str, parse_rate: float, tags: set[str]) -> Scenario:
    """source at 1000/s -> parse (one instance of ``parse_rate``/s), tagged."""
    return Scenario(
        name=name,
        operators=(
            SimOperator("source", true_rate=5000.0),
            SimOperator("parse", ("source",), true_rate=parse_rate, partitions=8),
        ),
        schedule=Constant(1000.0),
        tags=frozenset(tags),
    )


def test_summary_has_medians_per_tag_beside_the_overall_ones():
    suite = [tagged("a", 200.0, {"slow", "x"}), tagged("b", 400.0, {"slow"}), tagged("c", 2000.0, {"fast", "x"})]
    episodes = [run_episode(s, "static", policy_factory("static", SETTINGS), SETTINGS) for s in suite]
    (row,) = summarise(episodes, ["static"]).values()
    assert row["scenarios"] == 3 and set(row["by_tag"]) == {"slow", "fast", "x"}
    slow = [e for e in episodes if e.scenario in ("a", "b")]
    assert row["by_tag"]["slow"]["scenarios"] == 2
    assert row["by_tag"]["slow"]["mean_reward"] == pytest.approx(statistics.median(e.mean_reward for e in slow))
    # Static keeps up only where one instance is enough: c, tagged fast and x.
    assert row["by_tag"]["fast"]["sustained"] == "1/1" and row["by_tag"]["slow"]["sustained"] == "0/2"
    assert row["by_tag"]["x"]["sustained"] == "1/2"
    assert row["by_tag"]["fast"]["decisions_to_sustain"] == 0 and row["by_tag"]["slow"]["decisions_to_sustain"] is None
    assert row["sustained"] == "1/3"


def test_the_suite_is_the_seeded_one_the_wide_one_or_a_file(tmp_path):
    assert [s.name for s in chosen_suite(0)] == [s.name for s in scenarios.suite(0)]
    assert len(chosen_suite(0, 5)) == 5
    assert [s.name for s in chosen_suite(1, name="wide")] == [s.name for s in scenarios.wide_suite(1)]
    assert len(chosen_suite(1, 4, name="wide")) == 4
    path = tmp_path / "one.json"
    path.write_text(json.dumps([FILE_SCENARIO]))
    assert [s.name for s in chosen_suite(0, name="wide", path=path)] == ["orders"]
    with pytest.raises(ValueError, match="unknown suite"):
        chosen_suite(0, name="narrow")


FILE_SCENARIO = {
    "name": "orders",
    "source_rate": 400,
    "schedule": [[0, 1.0], [30, 2.0]],
    "restart_s": 5,
    "horizon_s": 60,
    "tags": ["mine", "step"],
    "operators": [
        {"name": "source", "source": True},
        {"name": "parse", "upstreams": ["source"], "true_rate": 300, "partitions": 8},
        {"name": "score", "upstreams": ["parse"], "capacity": {"1": 500, "2": 950, "4": 1700}, "partitions": 8},
    ],
}


def test_bench_runs_a_scenario_file_and_writes_per_tag_medians(tmp_path):
    path = tmp_path / "orders.json"
    path.write_text(json.dumps([FILE_SCENARIO]))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", "--scenario-file", str(path), "--policy", "ds2", "--out", str(out)])
    assert result.exit_code == 0, result.output

    payload = json.loads((out / "results.json").read_text())
    (episode,) = payload["episodes"]
    assert episode["scenario"] == "orders" and episode["policy"] == "ds2" and episode["tags"] == ["mine", "step"]
    assert payload["settings"]["n_scenarios"] == 1
    ds2 = payload["summary"]["ds2"]
    assert set(ds2["by_tag"]) == {"mine", "step"}
    for tag in ("mine", "step"):
        assert ds2["by_tag"][tag]["scenarios"] == 1
        assert ds2["by_tag"][tag]["mean_reward"] == ds2["mean_reward"] == episode["mean_reward"]
        assert ds2["by_tag"][tag]["reconfigurations"] == episode["reconfigurations"] >= 1
    assert len(payload["timeseries"]["orders"]["ds2"]) == 30  # a sample per 2 s report over 60 s
    markdown = (out / "results.md").read_text()
    assert "## Per tag" in markdown and "| mine | ds2 | 1 |" in markdown
    assert (out / "parallelism_orders.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_refuses_a_malformed_scenario_file_naming_the_field(tmp_path):
    bad = {
        **FILE_SCENARIO,
        "operators": [*FILE_SCENARIO["operators"][:2], {"name": "score", "upstreams": ["parsed"], "true_rate": 10}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([bad]))
    result = CliRunner().invoke(main, ["bench", "--scenario-file", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "scenario 0 (orders): operators[2] (score).upstreams: unknown operator 'parsed'" in result.output
    assert not (tmp_path / "out").exists()
