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
    model_config = SettingsConfigDict(env_prefix="LASTREAM_WC_", extra="ignore")

    app: str = "wordcount"
    # Prefix of topic names and Faust app ids (= consumer groups); tests make it unique.
    prefix: str = "wc"
    partitions: int = Field(default=8, ge=1)
    rate: float = Field(default=10.0, gt=0, description="sentences per second from the source")
    # e.g. "0:100,60:250,120:50" (seconds:rate steps) or "sine:100,50,120" (base, amplitude, period s)
    schedule: str | None = None
    # Send the corpus this many times then stop (0 = forever): gives tests a finite input.
    repeat: int = Field(default=0, ge=0)
    cost_splitter_ms: float = Field(default=150.0, ge=0)
    cost_counter_ms: float = Field(default=20.0, ge=0)
    cost_sink_ms: float = Field(default=1.0, ge=0)
    metrics_interval_s: float = Field(default=2.0, gt=0)
    metrics_enabled: bool = True
    topk: int = Field(default=10, ge=1)
    topk_interval_s: float = Field(default=5.0, gt=0)

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
