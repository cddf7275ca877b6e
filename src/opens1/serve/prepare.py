"""A request's cost, checked before any expensive work; then the expensive work itself,
which runs in a worker process (`serve/workers.py`).

    messages, tools = chat_inputs(state, req)       # in the server: cheap checks, budgets
    out = await state.render.run(render_chat, messages, tools, thinking=True)   # in a worker

Budgets, all per request and all checked before tokenizing, decoding or converting:
- characters: the prompt's text (message contents, reasoning, tool calls, tool
  definitions) has at most `max_prompt_chars` characters, by default max_seq_len x
  CHARS_PER_TOKEN (16). Real text runs 2-4.5 characters per token (OpenS1's and Qwen's
  tokenizers on arXiv LaTeX, MATH-500 and Python source), so a longer prompt could not
  fit the context anyway; refusing it by its length bounds what tokenizing can cost.
- images: width x height read from each image's header (PIL opens lazily), at most
  `max_image_pixels` (40 M) per image and `max_request_pixels` (64 M) per request, and
  their tokens (tiles x tokens per tile, from the header size) within the context.
- time series: length x channels at most `max_series_values` (1 M) per request, since the
  tower's work grows with both while its token count grows with length only; their
  tokens within the context.
The worker then decodes one image at a time (each is tiled and dropped before the next),
so a request's peak memory is one decoded image, not all of them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from opens1.processing.images import image_size, num_tiles
from opens1.processing.series import series_shape, series_tokens_or_zero
from opens1.serve import protocol as P
from opens1.serve.protocol import APIError

CHARS_PER_TOKEN = 16
MAX_REQUEST_PIXELS = 64_000_000  # all images of one request, read from their headers


class Budget:
    """What a request has used so far, against the server's limits."""

    def __init__(self, state):
        self.state = state
        self.chars = 0
        self.pixels = 0
        self.series_values = 0
        self.media_tokens = 0

    def text(self, s: str | None) -> None:
        self.chars += len(s or "")

    def check_text(self, param: str = "messages") -> None:
        limit = self.state.prompt_char_limit
        if self.chars > limit:
            raise APIError(
                400, f"{param}: the prompt has {self.chars:,} characters; this server accepts at most {limit:,} "
                f"({self.state.max_seq_len} tokens of context x {self.state.chars_per_token} characters per token)",
                param=param, code="context_length_exceeded",
            )

    def image(self, width: int, height: int, param: str) -> None:
        st = self.state
        n = width * height
        if n > st.max_image_pixels:
            raise APIError(400, f"{param}: image too large ({width}x{height} = {n:,} pixels; at most "
                           f"{st.max_image_pixels:,} per image)", param=param, code="image_too_large")
        self.pixels += n
        if self.pixels > st.max_request_pixels:
            raise APIError(400, f"{param}: the request's images have {self.pixels:,} pixels in all; at most "
                           f"{st.max_request_pixels:,} per request", param=param, code="image_too_large")
        cfg = st.processor.config
        self.media_tokens += num_tiles(width, height, cfg.vision) * cfg.image_tokens_per_tile + 2
        self._check_tokens(param)

    def series(self, length: int, channels: int, rate: float, param: str) -> None:
        st = self.state
        self.series_values += length * channels
        if self.series_values > st.max_series_values:
            raise APIError(400, f"{param}: the request's time series have {self.series_values:,} values "
                           f"(length x channels) in all; at most {st.max_series_values:,} per request",
                           param=param, code="series_too_large")
        cfg = st.processor.config.timeseries
        self.media_tokens += series_tokens_or_zero(min(length, cfg.max_samples), rate, cfg) + 2
        self._check_tokens(param)

    def _check_tokens(self, param: str) -> None:
        if self.media_tokens >= self.state.max_seq_len:
            raise APIError(400, f"{param}: the images and series alone take {self.media_tokens} tokens; the context "
                           f"is {self.state.max_seq_len} tokens", param=param, code="context_length_exceeded")


def image_bytes(url: str, param: str) -> bytes:
    """The encoded image of a data: URL. Remote URLs are refused, never fetched."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme != "data":
        raise APIError(
            400, f"{param}: only inline data: URLs are accepted (got a {scheme or 'schemeless'} URL); "
            "this server never fetches remote images", param=param, code="invalid_image_url",
        )
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise APIError(400, f"{param}: expected data:image/<type>;base64,<data>", param=param, code="invalid_image")
    mime = header[5:].split(";")[0].strip().lower()
    if mime and not mime.startswith("image/"):
        raise APIError(400, f"{param}: data URL type {mime!r} is not an image", param=param, code="invalid_image")
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: the image data is not valid base64", param=param, code="invalid_image") from None


def _image_part(state, budget: Budget, part: P.ImagePart, *, role: str, param: str) -> dict:
    if not state.supports_images:
        raise APIError(400, f"{param}: this model has no vision tower; images are not accepted", param=param)
    if role != "user":
        raise APIError(400, f"{param}: images are only accepted in user messages", param=param)
    param += ".image_url.url"
    raw = image_bytes(part.image_url.url, param)
    try:
        width, height = image_size(raw)  # the header only: no pixel is decoded here
    except ValueError as e:
        raise APIError(400, f"{param}: the image data cannot be decoded ({e})", param=param, code="invalid_image") from None
    budget.image(width, height, param)
    return {"type": "image", "image": raw}


def _series_part(state, budget: Budget, part: P.TimeSeriesPart, *, role: str, param: str) -> dict:
    if not state.supports_series:
        raise APIError(400, f"{param}: this model has no time-series tower; series are not accepted", param=param)
    if role != "user":
        raise APIError(400, f"{param}: time series are only accepted in user messages", param=param)
    param += ".time_series"
    ts = part.time_series
    try:
        length, channels = series_shape(ts.values)
    except ValueError as e:
        raise APIError(400, f"{param}.values: {e}", param=param) from None
    budget.series(length, channels, ts.sampling_rate, param)
    return {"type": "time_series", "time_series": {"values": ts.values, "sampling_rate": ts.sampling_rate}}


def chat_inputs(state, req: P.ChatCompletionRequest) -> tuple[list[dict], list[dict] | None]:
    """Check and budget a chat request: OpenAI messages -> the Processor's message dicts
    (images as their encoded bytes, sizes read from the headers) and the tools. No
    tokenizing, decoding or array building happens here."""
    if isinstance(req.tool_choice, dict) or req.tool_choice == "required":
        raise APIError(400, "tool_choice: only 'auto' and 'none' are supported", param="tool_choice")
    budget = Budget(state)
    tools = None
    if req.tools and req.tool_choice != "none":
        tools = [t.model_dump(exclude_none=True) for t in req.tools]
        budget.text(json.dumps(tools, ensure_ascii=False))
    out = [_message(state, budget, m, i) for i, m in enumerate(req.messages)]
    budget.check_text()
    return out, tools


def _message(state, budget: Budget, m: P.ChatMessage, i: int) -> dict:
    """One message as the Processor takes it, its text counted in `budget`."""
    msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role}
    if isinstance(m.content, list):
        msg["content"] = [_part(state, budget, part, role=m.role, param=f"messages.{i}.content.{j}")
                          for j, part in enumerate(m.content)]
    else:
        msg["content"] = m.content or ""
        budget.text(m.content)
    if m.role == "assistant":
        if m.reasoning_content:
            msg["reasoning_content"] = m.reasoning_content
            budget.text(m.reasoning_content)
        if m.tool_calls:
            msg["tool_calls"] = [tc.model_dump() for tc in m.tool_calls]
            for tc in m.tool_calls:
                budget.text(tc.function.name)
                budget.text(tc.function.arguments)
    if m.role == "tool" and m.tool_call_id:
        msg["tool_call_id"] = m.tool_call_id
    if m.name:
        msg["name"] = m.name
        budget.text(m.name)
    return msg


def _part(state, budget: Budget, part, *, role: str, param: str) -> dict:
    if isinstance(part, P.TextPart):
        budget.text(part.text)
        return {"type": "text", "text": part.text}
    if isinstance(part, P.ImagePart):
        return _image_part(state, budget, part, role=role, param=param)
    return _series_part(state, budget, part, role=role, param=param)


def completion_inputs(state, prompt) -> list[str | list[int]]:
    """OpenAI's four prompt forms -> a list of prompts (text, or checked token ids)."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt: must not be empty", param="prompt")
    n_ids = len(state.tokenizer)  # the model's vocabulary may be padded past the tokenizer's ids
    for p in prompt:
        if not p:
            raise APIError(400, "prompt: must not be empty", param="prompt")
        if isinstance(p, str):
            budget = Budget(state)
            budget.text(p)
            budget.check_text("prompt")
            continue
        if len(p) >= state.max_seq_len:
            raise APIError(400, f"prompt: {len(p)} token ids; the context is {state.max_seq_len} tokens",
                           param="prompt", code="context_length_exceeded")
        bad = next((t for t in p if not 0 <= t < n_ids), None)
        if bad is not None:
            raise APIError(400, f"prompt: token id {bad} is outside the tokenizer's vocabulary (0..{n_ids - 1})",
                           param="prompt")
    return list(prompt)


# ------------------------------------------------------------------ in a worker (context: the Processor)


def render_chat(processor, messages: list[dict], tools: list[dict] | None, *, thinking: bool,
                special_tokens_in_content: bool = False, add_generation_prompt: bool = True) -> dict:
    """Chat template, tokenization, image tiles and series -> the engine's inputs, as plain
    lists and numpy arrays: {input_ids, pixel_values, time_series, sampling_rates,
    thinking_open}. Added-token strings in message content are text unless
    `special_tokens_in_content` (the server's --special-tokens-in-content: HF's and vLLM's
    behaviour). Bad input the checks could not see (a corrupt image, a series too short
    for one token) is a ValueError."""
    inputs = processor(messages, tools=tools, enable_thinking=thinking, add_generation_prompt=add_generation_prompt,
                       special_tokens_in_content=special_tokens_in_content)
    ids = inputs["input_ids"][0].tolist()
    think_id = _token_id(processor.tokenizer, "<think>")
    pv, ts = inputs.get("pixel_values"), inputs.get("time_series")
    return {
        "input_ids": ids,
        # Intern-S1's thinking generation prompt ends in `<think>` (maybe plus a newline)
        "thinking_open": add_generation_prompt and thinking and think_id is not None and think_id in ids[-3:],
        "pixel_values": None if pv is None else pv.numpy(),  # [tiles, 3, S, S]
        "time_series": None if ts is None else [x.numpy() for x in ts],  # [T_i, C_i] each
        "sampling_rates": inputs.get("sampling_rates"),
    }


def completion_prompts(processor, prompts: list[str | list[int]]) -> list[tuple[list[int], str]]:
    """[(ids, text)] per prompt: text is encoded as vLLM does (added-token strings in a raw
    prompt are their tokens: a raw ChatML prompt is the ChatML ids); token ids are decoded
    for `echo`."""
    tok = processor.tokenizer
    out = []
    for p in prompts:
        if isinstance(p, str):
            ids, text = tok.encode(p, split_special_tokens=False), p
            if not ids:
                raise ValueError("prompt: must not be empty")
        else:
            ids, text = list(p), tok.decode(list(p), skip_special_tokens=False)
        out.append((ids, text))
    return out


def _token_id(tok, s: str) -> int | None:
    try:
        return tok.token_to_id(s)
    except (KeyError, ValueError):
        return None


# ------------------------------------------------------------------ before pydantic


def check_sizes(state, body: dict) -> None:
    """Bound how many things a parsed JSON body holds before pydantic builds objects for them
    (validating 1.5 M empty messages took 8 s): messages, content parts and tool calls,
    tools, stop strings, prompts, series values. Types stay pydantic's business."""
    ctx = state.max_seq_len
    messages = body.get("messages")
    if isinstance(messages, list):
        _check_messages(state, messages)
    tokens = body.get("tokens")  # /detokenize: a context's worth of ids at most
    if isinstance(tokens, list) and len(tokens) > ctx:
        _refuse("tokens", f"{len(tokens):,} token ids", ctx, ctx=ctx)
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > ctx // 4:
        _refuse("tools", f"{len(tools):,} tools", ctx // 4, ctx=ctx)
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        raise APIError(400, "stop: at most 4 stop sequences", param="stop", code="invalid_value")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt:
        _check_prompts(prompt, ctx)


def _refuse(param: str, what: str, limit: int, *, ctx: int):
    raise APIError(400, f"{param}: {what}; at most {limit:,} fit a context of {ctx} tokens",
                   param=param, code="context_length_exceeded")


def _check_messages(state, messages: list) -> None:
    ctx = state.max_seq_len
    if len(messages) > ctx // 4:  # a message renders to at least 4 tokens
        _refuse("messages", f"{len(messages):,} messages", ctx // 4, ctx=ctx)
    parts = values = 0
    for m in messages:
        if not isinstance(m, dict):
            continue
        for key in ("content", "tool_calls"):
            if isinstance(m.get(key), list):
                parts += len(m[key])
        if parts > ctx:
            _refuse("messages", "too many content parts and tool calls", ctx, ctx=ctx)
        for part in m.get("content") if isinstance(m.get("content"), list) else ():
            ts = part.get("time_series") if isinstance(part, dict) else None
            vals = ts.get("values") if isinstance(ts, dict) else None
            if isinstance(vals, list) and vals:
                values += len(vals) * (len(vals[0]) if isinstance(vals[0], list) else 1)
    if values > state.max_series_values:
        raise APIError(400, f"messages: the request's time series have {values:,} values (length x channels) in "
                       f"all; at most {state.max_series_values:,} per request", param="messages",
                       code="series_too_large")


def _check_prompts(prompt: list, ctx: int) -> None:
    if isinstance(prompt[0], int):
        if len(prompt) >= ctx:
            _refuse("prompt", f"{len(prompt):,} token ids", ctx - 1, ctx=ctx)
    elif len(prompt) > P.MAX_PROMPTS:
        raise APIError(400, f"prompt: {len(prompt):,} prompts; at most {P.MAX_PROMPTS} per request",
                       param="prompt", code="invalid_value")
    else:
        for p in prompt:
            if isinstance(p, list) and len(p) >= ctx:
                _refuse("prompt", f"{len(p):,} token ids", ctx - 1, ctx=ctx)
