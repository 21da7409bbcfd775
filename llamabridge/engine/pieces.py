"""Token pieces (UTF-8 bytes) to text, as a stream."""

from __future__ import annotations

import codecs


class PieceDecoder:
    """A character split across tokens waits for its last byte; invalid bytes become U+FFFD. A
    character still incomplete when generation ends (max_tokens hit in its middle) is dropped,
    as llama-server drops it, instead of ending the text with U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.feed = self._decoder.decode      # feed(piece: bytes) -> str, once per token: no extra frame

    def finish(self) -> int:
        """End of the stream: how many bytes of an incomplete character were dropped."""
        pending, _ = self._decoder.getstate()
        self._decoder.reset()
        return len(pending)
