"""The sink's latest count of each word, bounded: a word stream has no end of new words."""

from __future__ import annotations

import logging
from collections import OrderedDict

log = logging.getLogger(__name__)


class LatestCounts:
    """Each word's highest count seen (a replayed update is lower), for at most
    ``max_words`` words; beyond, the least recently updated word is forgotten. A frequent
    word is updated all the time, so the top words stay."""

    def __init__(self, max_words: int) -> None:
        self.max_words = max_words
        self._counts: OrderedDict[str, int] = OrderedDict()

    def update(self, word: str, count: int) -> None:
        self._counts[word] = max(self._counts.get(word, 0), count)
        self._counts.move_to_end(word)
        if len(self._counts) > self.max_words:
            self._counts.popitem(last=False)
            log.warning(
                "the sink keeps the counts of %d words, the most allowed (LASTREAM_WC_SINK_MAX_WORDS); "
                "forgetting the least recently updated",
                self.max_words,
            )

    def top(self, k: int) -> list[tuple[str, int]]:
        return sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]

    def __len__(self) -> int:
        return len(self._counts)
