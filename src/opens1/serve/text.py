"""Token ids to streamed text: incremental detokenization, stop strings, and the
split of a thinking model's output into reasoning and content while it streams.

Design choices:
- Incremental decoding re-decodes a short window (`prefix_offset:`) instead of the
  whole output per token, and holds text back while it ends in U+FFFD: a multi-byte
  character split across byte-level tokens is only emitted once complete.
- Special tokens are decoded (skip_special_tokens=False): `</think>` and
  `<|action_start|><|plugin|>` are what the split looks for, as Intern-S1's tool
  parser requires (lmdeploy's internlm2 tool parser).
- The split is a pure function of the text so far, recomputed per delta (a few
  `str.find`s); what was already sent is remembered as lengths, so the deltas
  concatenate exactly to the final split. A tail that could still become a marker
  or a stop string is held back until it can't.
- Stop strings and markers are matched with Knuth-Morris-Pratt automata fed each
  delta once (`_Matcher`): the work per token is linear in the new text, whatever the
  stop strings' lengths, and the held-back tail is the automata's state.
- The final answer of a non-streamed request goes through the one chat parser
  (`opens1.tokenizer.chat.parse_response`) instead; tool calls, in both modes, too.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ACTION_START = "<|action_start|>"


class IncrementalDecoder:
    """Turns token ids, one at a time, into text deltas."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # decode from here, to give the tokenizer left context
        self.read_offset = 0  # text up to here has been returned

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix = self.tok.decode(self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=False)
        full = self.tok.decode(self.ids[self.prefix_offset :], skip_special_tokens=False)
        if len(full) > len(prefix) and not full.endswith("\ufffd") and full.startswith(prefix):
            delta = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        if not full.startswith(prefix):
            # the window re-tokenized differently: fall back to the whole output
            delta = self._resync()
            return delta
        return ""

    def _resync(self) -> str:
        before = self.tok.decode(self.ids[: self.read_offset], skip_special_tokens=False)
        after = self.tok.decode(self.ids, skip_special_tokens=False)
        if after.endswith("\ufffd"):
            return ""
        self.prefix_offset = self.read_offset = len(self.ids)
        return after[len(before) :] if after.startswith(before) else ""


def split_reasoning(text: str, thinking_open: bool) -> tuple[str, str, str | None]:
    """(reasoning, content, tool-call text or None) of a partial or full output.

    thinking_open: the prompt ended inside a `<think>` block (Intern-S1's thinking
    generation prompt), so the output starts as reasoning."""
    rest = text
    reasoning = ""
    stripped = text.lstrip()
    if not thinking_open and stripped.startswith(THINK_OPEN):
        thinking_open, rest = True, stripped[len(THINK_OPEN) :]
    if thinking_open:
        end = rest.find(THINK_CLOSE)
        if end < 0:
            return rest.lstrip("\n"), "", None
        reasoning, rest = rest[:end].lstrip("\n"), rest[end + len(THINK_CLOSE) :]
    rest = rest.lstrip("\n") if reasoning or thinking_open else rest
    j = rest.find(ACTION_START)
    if j < 0:
        return reasoning, rest, None
    return reasoning, rest[:j], rest[j:]


class _Matcher:
    """Knuth-Morris-Pratt over a growing text: `k` is the length of the longest suffix of
    the text fed so far that is a proper prefix of `pattern` (what must be held back)."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.k = 0
        # fail[i]: the longest proper prefix of pattern[:i+1] that is also its suffix
        self.fail = [0] * len(pattern)
        k = 0
        for i in range(1, len(pattern)):
            while k and pattern[i] != pattern[k]:
                k = self.fail[k - 1]
            if pattern[i] == pattern[k]:
                k += 1
            self.fail[i] = k

    def feed(self, s: str, stop_at_match: bool) -> int:
        """Feed s. Returns the index in s just past the first full match (and stops there
        when stop_at_match), else -1; without stop_at_match, matching carries on past it."""
        p, fail, k = self.pattern, self.fail, self.k
        m, n, i, first = len(p), len(s), 0, -1
        while i < n:
            if k == 0:  # skip to the next possible start in C, not character by character
                i = s.find(p[0], i)
                if i < 0:
                    break
            c = s[i]
            while k and p[k] != c:
                k = fail[k - 1]
            if p[k] == c:
                k += 1
            i += 1
            if k == m:
                if first < 0:
                    first = i
                if stop_at_match:
                    break
                k = fail[k - 1]
        self.k = k
        return first


@dataclass
class Delta:
    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


class OutputText:
    """The text of one choice as it grows: stop strings, held-back tails, deltas."""

    def __init__(self, stop: list[str] | None = None, *, thinking_open: bool = False, split: bool = True):
        self.stop = list(stop or [])
        self.thinking_open = thinking_open
        self.split = split
        self.text = ""
        self.stopped = False
        self._sent_r = 0
        self._sent_c = 0
        self._stops = [_Matcher(s) for s in self.stop]
        self._markers = [_Matcher(m) for m in (THINK_OPEN, THINK_CLOSE, ACTION_START)] if split else []

    def feed(self, delta: str) -> Delta:
        """Add decoded text; returns what can be sent now. Sets `stopped` on a stop string."""
        if self.stopped or not delta:
            return Delta()
        base, cut = len(self.text), None
        for m in self._stops:
            end = m.feed(delta, stop_at_match=True)
            if end >= 0:  # the earliest starting match wins (it may begin in held-back text)
                start = base + end - len(m.pattern)
                cut = start if cut is None else min(cut, start)
        for m in self._markers:
            m.feed(delta, stop_at_match=False)
        self.text += delta
        if cut is not None:
            self.text = self.text[:cut]
            self.stopped = True
        return self._deltas(final=self.stopped)

    def finish(self) -> Delta:
        """Everything not yet sent (held-back tails included)."""
        return self._deltas(final=True)

    def parts(self) -> tuple[str, str, str | None]:
        if not self.split:
            return "", self.text, None
        return split_reasoning(self.text, self.thinking_open)

    def _deltas(self, final: bool) -> Delta:
        text = self.text if final else self.text[: len(self.text) - self._held_tail()]
        if self.split:
            reasoning, content, _ = split_reasoning(text, self.thinking_open)
        else:
            reasoning, content = "", text
        out = Delta(reasoning[self._sent_r :], content[self._sent_c :])
        # the split only ever grows each part, so lengths are enough to remember what was sent
        self._sent_r = max(self._sent_r, len(reasoning))
        self._sent_c = max(self._sent_c, len(content))
        return out

    def _held_tail(self) -> int:
        """Length of the longest tail that is a proper prefix of a marker or stop string."""
        return max((m.k for m in self._stops + self._markers), default=0)
