"""The prototype's API, run on its README example (three operators, 0 -> 1 -> 2)."""

from __future__ import annotations

import math

from lastream_stream.policy.facade import StreamProcessingRLAgent

# The README's Source plus the "more operators" it elides, in the same normalised units.
OPERATORS_INFO = [
    {"name": "Source", "processing_capability": 0.9, "input_rate": 0.8, "resource_load": 0.3},
    {"name": "Split", "processing_capability": 0.3, "input_rate": 0.8, "resource_load": 0.9},
    {"name": "Count", "processing_capability": 0.5, "input_rate": 0.6, "resource_load": 0.7},
]
DEPENDENCIES = [(0, 1), (1, 2)]
# DS2: the source emits 0.8; Split needs 0.8 / 0.3 = 2.67 -> 3, Count 0.8 / 0.5 = 1.6 -> 2.
DS2 = [1, 3, 2]


def test_readme_example_with_llm_candidates(chat_server):
    chat_server.reply('{"schemes": [{"parallelism": {"Source": 1, "Split": 5, "Count": 2}, "reason": "more split"}]}')
    agent = StreamProcessingRLAgent(
        deepseek_api_key="your-deepseek-api-key",
        gcn_config={"output_dim": 64},
        deepseek_config={"max_parallelism": 8, "base_url": chat_server.url},
    )
    best_scheme, action_info = agent.act(operators_info=OPERATORS_INFO, dependencies=DEPENDENCIES)

    assert chat_server.headers[0]["authorization"] == "Bearer your-deepseek-api-key"
    assert DS2 in action_info["all_schemes"]
    assert [1, 5, 2] in action_info["all_schemes"]
    assert action_info["sources"][action_info["all_schemes"].index([1, 5, 2])] == "llm"
    assert best_scheme in action_info["all_schemes"]
    assert all(1 <= p <= 8 for scheme in action_info["all_schemes"] for p in scheme)
    # Whatever it prefers, it must keep up: at least DS2's instances on Split and Count.
    assert best_scheme[0] == 1 and best_scheme[1] >= 3 and best_scheme[2] >= 2
    assert 0 < action_info["predicted_value"] <= 1
    assert action_info["predicted_value"] == max(action_info["scores"])
    assert not math.isnan(action_info["timings_ms"]["total_ms"])


def test_without_a_key_it_still_acts(monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    agent = StreamProcessingRLAgent(deepseek_config={"max_parallelism": 2})
    best_scheme, action_info = agent.act(OPERATORS_INFO, DEPENDENCIES)
    # Split would need 3 but the cap is 2.
    assert best_scheme[1] <= 2
    assert set(action_info["sources"]) == {"analytic"}
    agent.observe(action_info, 0.5)
    assert agent.agent.history[-1].scheme == dict(zip(["Source", "Split", "Count"], best_scheme, strict=True))
