"""WordCount configuration, from ``LASTREAM_WC_*`` environment variables.

The defaults are sized for a 2-core laptop running the broker, the agent and every worker:
few Faust events per second, each with a per-record cost that is an I/O-like wait
(``asyncio.sleep``), so parallelism is needed without burning the cores. At the default
10 sentences/s of ~6.9 words each (~69 words/s):

- splitter: 10 x 150 ms = 1.5 busy seconds per second, so two instances (one is saturated
  at 6.7 sentences/s);
- counter: ~69 words/s x 20 ms = 1.4 busy s/s, so two instances (one does 50 words/s);
- sink: ~69 updates/s x 1 ms = 0.07 busy s/s, one instance.

Started at one instance each, the app falls behind (the splitter's lag grows by ~3
sentences/s) until the agent scales out to about splitter 2, counter 2, sink 1: 5 workers
handling ~150 events/s between them. Faust's own per-event CPU cost comes on top of the
waits; at these rates it is small, and the DS2 rule works from the measured useful time.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

UPSTREAMS: dict[str, list[str]] = {"source": [], "splitter": ["source"], "counter": ["splitter"], "sink": ["counter"]}


class WordCountSettings(BaseSettings):
    """WordCount, the reference app (`lastream wordcount`, `lastream up`)."""

    model_config = SettingsConfigDict(env_prefix="LASTREAM_WC_", extra="ignore")

    app: str = Field(default="wordcount", description="App name in metrics reports and scaling commands.")
    prefix: str = Field(
        default="wc",
        description="Prefix of the topic names and the Faust app ids (one consumer group per operator); tests make it unique.",
    )
    partitions: int = Field(default=8, ge=1, description="Partitions of each topic: the most instances of an operator.")
    rate: float = Field(default=10.0, gt=0, description="Sentences per second from the source.")
    schedule: str | None = Field(
        default=None,
        description="Source rate over time instead of `rate`: `0:100,60:250,120:50` (seconds:rate steps) or `sine:100,50,120` (base, amplitude, period in seconds).",
    )
    # Gives tests a finite input.
    repeat: int = Field(default=0, ge=0, description="Send the corpus this many times, then stop; 0 sends forever.")
    source_queue_max: int = Field(
        default=100_000,
        ge=1,
        description="Sentences the source holds while the broker does not take them (an outage), about 300 bytes each; when full, the source waits instead of dropping one.",
    )
    cost_splitter_ms: float = Field(default=150.0, ge=0, description="Splitter's cost per sentence, ms (a wait).")
    cost_counter_ms: float = Field(default=20.0, ge=0, description="Counter's cost per word, ms (a wait).")
    cost_sink_ms: float = Field(default=1.0, ge=0, description="Sink's cost per count update, ms (a wait).")
    metrics_interval_s: float = Field(
        default=2.0, gt=0, description="How often each worker publishes its metrics report, seconds."
    )
    metrics_enabled: bool = Field(
        default=True, description="Workers publish metrics reports; off only to measure what the reporting costs."
    )
    topk: int = Field(default=10, ge=1, description="Number of top words the sink publishes.")
    sink_max_words: int = Field(
        default=100_000,
        ge=1,
        description="Most words the sink keeps a count of; beyond, the least recently updated is forgotten (logged).",
    )
    topk_interval_s: float = Field(
        default=5.0, gt=0, description="How often the sink publishes the top words, seconds."
    )

    def topic(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    @property
    def sentences_topic(self) -> str:
        return self.topic("sentences")

    @property
    def words_topic(self) -> str:
        return self.topic("words")

    @property
    def counts_topic(self) -> str:
        return self.topic("counts")

    @property
    def topk_topic(self) -> str:
        return self.topic("topk")

    def faust_id(self, operator: str) -> str:
        return f"{self.prefix}-{operator}"

    def cost_s(self, operator: str) -> float:
        return getattr(self, f"cost_{operator}_ms") / 1000.0
