"""Token ids to text, incrementally, with stop strings.

Byte-level tokenizers split a character over several tokens, so text is only released once it
decodes without a replacement character (the method of TGI and vLLM: decode a short window of
ids and emit what it adds). Text that could be the start of a stop string is held back until
the next tokens show whether the stop string follows; a stop string ends the sequence and is
not part of its text.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class IncrementalText:
    """The text of one sequence's generated tokens, released token by token."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""  # decoded so far (released or held back)
        self.sent = 0  # characters of ``text`` already released
        self._prefix = 0  # window start in ``ids``
        self._read = 0  # ids decoded into ``text``
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def add(self, token_id: int) -> str:
        """Append one token; the text it releases (``stopped`` is set when a stop string
        appeared: the text before it has then been released in full)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        now = self._decode(self.ids[self._prefix :])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self.text += now[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
        return self._release()

    def _release(self) -> str:
        if self.stop:
            start = max(0, self.sent - max(len(s) for s in self.stop))
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                end = min(hits)
                out = self.text[self.sent : end]
                self.text, self.sent, self.stopped = self.text[:end], end, True
                return out
        end = len(self.text) - self._held_back()
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out

    def _held_back(self) -> int:
        """Characters at the end of ``text`` that begin some stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text) - self.sent), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def flush(self) -> str:
        """The end of the sequence: whatever was held back, and any undecodable tail."""
        if self._read < len(self.ids):
            tail = self._decode(self.ids[self._prefix :])
            self.text += tail[len(self._decode(self.ids[self._prefix : self._read])) :]
            self._read = len(self.ids)
        if self.stopped:
            return ""
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out
