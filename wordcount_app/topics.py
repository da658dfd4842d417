"""WordCount's data topics, created before any worker starts so Faust never guesses partitions."""

from __future__ import annotations

from lastream_stream.kafka.clients import KafkaClients, TopicSpec
from lastream_stream.settings import LastreamSettings
from wordcount_app.settings import WordCountSettings


def ensure(settings: LastreamSettings, wc: WordCountSettings) -> None:
    names = [wc.sentences_topic, wc.words_topic, wc.counts_topic, wc.topk_topic]
    KafkaClients(settings.kafka).ensure_topics([TopicSpec(name, wc.partitions) for name in names])
