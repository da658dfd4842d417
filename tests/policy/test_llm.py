"""LLMGenerator against a real OpenAI-compatible HTTP server on 127.0.0.1 (no mocks).

The graph is the test chain: src (1 instance, 4 partitions), split (2, 8), count (2, 8), sink (1, 8).
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from chat_server import ChatServer
from policy_graphs import chain_graph
from pydantic import SecretStr

from lastream_stream.policy.agent import LaStreamAgent
from lastream_stream.policy.base import DecisionContext, PastDecision
from lastream_stream.policy.llm import LLMConfig, LLMGenerator, ParseStats

KEY = "sk-test-4b1d-not-a-real-key"


def generator(server: ChatServer, **config: object) -> LLMGenerator:
    return LLMGenerator(LLMConfig(**{"base_url": server.url, "api_key": SecretStr(KEY), "timeout_s": 2.0, **config}))


def scheme(src: int, split: int, count: int, sink: int) -> dict[str, int]:
    return {"src": src, "split": split, "count": count, "sink": sink}


def test_good_answer_and_what_the_prompt_holds(chat_server):
    chat_server.reply(
        json.dumps(
            {
                "schemes": [
                    {"parallelism": scheme(1, 3, 3, 1), "reason": "DS2's estimate"},
                    {"parallelism": scheme(1, 4, 4, 2), "reason": "headroom"},
                ]
            }
        )
    )
    llm = generator(chat_server, n_schemes=4)
    history = (PastDecision(scheme(1, 2, 2, 1), 0.4242),)
    candidates = llm.propose(chain_graph(), DecisionContext(history=history, latency_target_ms=200))

    assert [c.scheme for c in candidates] == [scheme(1, 3, 3, 1), scheme(1, 4, 4, 2)]
    assert [c.note for c in candidates] == ["DS2's estimate", "headroom"]
    assert {c.source for c in candidates} == {"llm"}
    assert llm.parse_stats == ParseStats(schemes_seen=2, accepted=2)

    request = chat_server.requests[0]
    assert request["model"] == "deepseek-chat"
    prompt = request["messages"][-1]["content"]
    for expected in (
        "split",
        "count",
        "true_rate_per_instance=400.0/s",
        "selectivity=3.000",
        "lag=8000",
        "max=8",
        "0.4242",
        "Propose 4",
        "latency target: 200 ms",
        "seconds of input",
    ):
        assert expected in prompt
    assert chat_server.headers[0]["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "content",
    [
        'Sure! Here they are:\n```json\n{"schemes": [{"parallelism": {"src": 1, "split": 5, "count": 4, "sink": 1}}]}\n```\nGood luck.',
        'I suggest {"schemes": [{"parallelism": {"src": 1, "split": 5, "count": 4, "sink": 1}}]} because split is saturated {see above}.',
        'Schemes: [{"src": 1, "split": 5, "count": 4, "sink": 1}]',
    ],
    ids=["fenced", "inline", "bare-list"],
)
def test_json_inside_prose(chat_server, content):
    chat_server.reply(content)
    assert [c.scheme for c in generator(chat_server).propose(chain_graph())] == [scheme(1, 5, 4, 1)]


def test_wrong_lengths_are_filled_or_trimmed(chat_server):
    chat_server.reply(json.dumps({"schemes": [[1, 5], [1, 3, 3, 1, 7], {"split": 6, "bogus": 3}]}))
    llm = generator(chat_server)
    assert [c.scheme for c in llm.propose(chain_graph())] == [
        scheme(1, 5, 2, 1),  # count and sink missing: kept at their current 2 and 1
        scheme(1, 3, 3, 1),  # a fifth position has no operator
        scheme(1, 6, 2, 1),  # "bogus" is not an operator; src, count, sink missing
    ]
    assert llm.parse_stats == ParseStats(schemes_seen=3, accepted=3, filled_missing=5, unknown_dropped=2)


def test_out_of_range_non_integer_garbage_and_duplicates(chat_server):
    chat_server.reply(
        '{"schemes": ['
        '{"parallelism": {"src": 1, "split": 100, "count": 0, "sink": 1}},'  # split capped at 8, count raised to 1
        '{"parallelism": {"src": "1", "split": "3.6", "count": 2.5, "sink": "lots"}},'  # 1, 4, 3; sink kept at 1
        '{"parallelism": {"src": 1, "split": 8, "count": 1, "sink": 1}},'  # the first one again
        '{"parallelism": {"split": null, "count": true}},'  # nothing usable
        '"not a scheme",'
        '{"parallelism": {"src": 1, "split": -3, "count": 1e9, "sink": NaN}}'  # 1, 8; sink kept at 1
        "]}"
    )
    llm = generator(chat_server)
    assert [c.scheme for c in llm.propose(chain_graph())] == [
        scheme(1, 8, 1, 1),
        scheme(1, 4, 3, 1),
        scheme(1, 1, 8, 1),
    ]
    assert llm.parse_stats == ParseStats(
        # rounded: "1", "3.6", 2.5 and 1e9 (a float in JSON); garbage: "lots", null, true, NaN
        schemes_seen=6,
        accepted=3,
        rejected=2,
        duplicates=1,
        filled_missing=2,
        rounded=4,
        garbage_dropped=4,
        clamped=4,
    )


def test_http_500_gives_no_candidates_and_no_retry(chat_server, caplog):
    caplog.set_level(logging.DEBUG)
    chat_server.reply(status=500)
    llm = generator(chat_server)
    assert llm.propose(chain_graph()) == []
    assert llm.stats.failures == 1
    assert len(chat_server.requests) == 1
    assert "LLM request" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in repr(llm.config)


def test_timeout_gives_no_candidates_quickly(chat_server):
    chat_server.reply("{}", delay_s=1.5)
    llm = generator(chat_server, timeout_s=0.3)
    started = time.monotonic()
    assert llm.propose(chain_graph()) == []
    assert time.monotonic() - started < 1.2
    assert llm.stats.failures == 1


def test_unparsable_answer(chat_server):
    chat_server.reply("Sorry, I cannot help with {that}.")
    llm = generator(chat_server)
    assert llm.propose(chain_graph()) == []
    assert llm.stats.unparsable == 1


def test_without_a_key_nothing_is_sent(chat_server, monkeypatch):
    monkeypatch.delenv("LASTREAM_TEST_LLM_KEY", raising=False)
    llm = LLMGenerator(LLMConfig(base_url=chat_server.url, api_key_env="LASTREAM_TEST_LLM_KEY"))
    assert not llm.enabled
    assert llm.propose(chain_graph()) == []
    assert chat_server.requests == []


def test_key_from_the_configured_environment_variable(chat_server, monkeypatch):
    monkeypatch.setenv("LASTREAM_TEST_LLM_KEY", "sk-from-env")
    chat_server.reply('{"schemes": [[1, 2, 2, 1]]}')
    llm = LLMGenerator(LLMConfig(base_url=chat_server.url, api_key_env="LASTREAM_TEST_LLM_KEY"))
    assert [c.scheme for c in llm.propose(chain_graph())] == [scheme(1, 2, 2, 1)]
    assert chat_server.headers[0]["authorization"] == "Bearer sk-from-env"


def test_any_openai_compatible_endpoint_from_the_environment(chat_server, monkeypatch):
    """A local model server instead of DeepSeek, configured as the README says."""
    monkeypatch.setenv("LASTREAM_LLM_BASE_URL", chat_server.url)
    monkeypatch.setenv("LASTREAM_LLM_MODEL", "local-model")
    monkeypatch.setenv("LASTREAM_LLM_API_KEY_ENV", "LOCAL_LLM_KEY")
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-local")
    chat_server.reply('{"schemes": [[1, 2, 2, 1]]}')
    llm = LLMGenerator()
    assert [c.scheme for c in llm.propose(chain_graph())] == [scheme(1, 2, 2, 1)]
    assert chat_server.requests[0]["model"] == "local-model"
    assert chat_server.headers[0]["authorization"] == "Bearer sk-local"


@pytest.mark.parametrize(
    ("reply", "llm_schemes"),
    [
        (
            {"content": '{"schemes": [[1, 6, 5, 2], [1, 3, 3, 1]]}'},
            [scheme(1, 6, 5, 2)],
        ),  # the 2nd is DS2's: analytic keeps it
        ({"status": 500}, []),
        ({"content": "{}", "delay_s": 1.0}, []),
        ({"content": "no JSON here"}, []),
    ],
    ids=["good", "http-500", "timeout", "unparsable"],
)
def test_agent_decides_whatever_the_llm_does(chat_server, reply, llm_schemes):
    chat_server.reply(**reply)
    agent = LaStreamAgent(generators=[generator(chat_server, timeout_s=0.3)])
    decision = agent.decide(chain_graph())
    assert [c.candidate.scheme for c in decision.candidates if c.candidate.source == "llm"] == llm_schemes
    assert scheme(1, 3, 3, 1) in [c.candidate.scheme for c in decision.candidates if c.candidate.source == "analytic"]
    assert decision.chosen in [c.candidate.scheme for c in decision.candidates]
    assert "generate_llm_ms" in decision.timings_ms
