"""The wire format of the OpenAI-compatible API, as pydantic models.

Requests are validated here, so that everything the routes in `routes/` see is
well-typed; a request that does not validate becomes a 400 with the offending
field named in `param` (see `payload.validation_error`). Design choices:

- Unknown *fields* are ignored (clients such as the official `openai` SDK send
  newer fields we do not know), but unknown *values* are refused: a role we do
  not know, a content part type we do not know, a sampling value out of range.
- Content parts: `text`, `image_url` (data URLs only; checked in the API layer
  where the image is decoded) and OpenS1's documented extension `time_series`:
  `{"type": "time_series", "time_series": {"values": [[...], ...], "sampling_rate": 360}}`
  where `values` is [T][C] (or a flat [T] list for one channel).
- Sampling defaults follow Intern-S1's model card (temperature 0.7, top_p 1.0,
  top_k 50, min_p 0); the API layer builds the request's `SamplingParams` from them
  where a field is None, so the served model's own defaults can differ (`ServeDefaults`).
- Responses are pydantic models too, dumped to JSON by the routes; stream chunks
  are dumped with `exclude_none` so deltas stay minimal, as OpenAI's are.
- Penalties follow vLLM: `repetition_penalty` (> 0, 1 off) over prompt and output,
  `presence_penalty` and `frequency_penalty` (in [-2, 2], OpenAI's range) over the output.
- `response_format` (`text`, `json_object`, `json_schema`) is honoured through constrained
  decoding (serve/structured.py); `thinking_budget` caps the reasoning tokens.
- Fields a request sends that the server does not use are listed in `ignored_fields`
  (the routes report them in a `Warning` header, a `warnings` field and the log).
- Every number has a range the engine can hold: `seed` in [-2^63, 2^64) (torch's
  generator seeds), `top_k` any value >= -1 (a top_k past the vocabulary means off),
  stop strings of at most MAX_STOP_CHARS characters, at most MAX_PROMPTS prompts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from opens1.infer.sampling import SamplingParams

# Roles the chat template knows. "developer" is OpenAI's newer name for "system".
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_N = 16  # choices per request; each is a separate sequence in the engine
MAX_TOP_LOGPROBS = 20
MAX_STOP_CHARS = 1000  # per stop string
MAX_PROMPTS = 64  # prompts in one /v1/completions request (each times n sequences)
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed takes


class APIError(Exception):
    """An error the client caused (or a capacity limit), sent as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self):
        from fastapi.responses import JSONResponse  # optional: fastapi (the render workers import this module)

        body = ErrorResponse(error=ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status)


@dataclass
class ServeDefaults:
    """Server-wide defaults for what a request leaves unset: the sampling knobs (Intern-S1's
    model card: temperature 0.7, top_p 1.0, top_k 50, min_p 0) and the completion length."""

    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.7, top_p=1.0, top_k=50))
    max_tokens: int | None = None  # None: up to the context length
    completion_max_tokens: int = 16  # OpenAI's default for /v1/completions


class _Lenient(BaseModel):
    # forwards compatible: fields we do not know are dropped, not refused
    model_config = ConfigDict(extra="ignore")


# ------------------------------------------------------------------ content parts


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


class TimeSeriesData(_Lenient):
    # [T][C] samples, or a flat [T] list for a single channel
    values: list[list[float]] | list[float] = Field(min_length=1)
    sampling_rate: float = Field(gt=0)


class TimeSeriesPart(_Lenient):
    type: Literal["time_series"]
    time_series: TimeSeriesData


ContentPart = Annotated[Union[TextPart, ImagePart, TimeSeriesPart], Field(discriminator="type")]


# ------------------------------------------------------------------ messages and tools


class FunctionCall(_Lenient):
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


class ToolCall(_Lenient):
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(_Lenient):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Lenient):
    include_usage: bool = False


class JSONSchemaFormat(_Lenient):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema(self):
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("a json_schema response_format needs json_schema.schema")
        return self


# ------------------------------------------------------------------ requests


class _SamplingFields(_Lenient):
    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)  # -1 or 0: off (vLLM's convention)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM extension: benchmarks generate exactly max_tokens
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)  # vLLM extension
    response_format: ResponseFormat | None = None
    _ignored: list[str] = PrivateAttr(default_factory=list)  # body fields the server does not use

    @property
    def ignored_fields(self) -> list[str]:
        return self._ignored

    def set_ignored(self, body: dict) -> None:
        """Record the body's fields this server does not use (set, not null)."""
        known = set(type(self).model_fields) | {f.alias for f in type(self).model_fields.values() if f.alias}
        names = sorted(k for k, v in body.items() if k not in known and v is not None)
        # bounded: a field's name is any string the client sends
        self._ignored = [k if len(k) <= 64 else k[:61] + "..." for k in names[:20]] + (
            [f"... and {len(names) - 20} more"] if len(names) > 20 else [])

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, str):
            v = [v]
        if v is not None:
            if len(v) > 4:
                raise ValueError("at most 4 stop sequences")
            if any(s == "" for s in v):
                raise ValueError("stop sequences must be non-empty")
            if any(len(s) > MAX_STOP_CHARS for s in v):
                raise ValueError(f"stop sequences must have at most {MAX_STOP_CHARS} characters")
        return v



class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    thinking_budget: int | None = Field(default=None, ge=1)  # reasoning tokens at most; then </think> is forced

    @field_validator("chat_template_kwargs")
    @classmethod
    def _kwargs(cls, v):
        if v and "enable_thinking" in v and not isinstance(v["enable_thinking"], bool):
            raise ValueError("chat_template_kwargs.enable_thinking must be a boolean")
        return v


class CompletionRequest(_SamplingFields):
    # a string, a batch of strings, a list of token ids, or a batch of them (OpenAI's four forms)
    prompt: str | Annotated[list[str], Field(max_length=MAX_PROMPTS)] | list[int] | Annotated[list[list[int]], Field(max_length=MAX_PROMPTS)]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        return v


class TokenizeRequest(_Lenient):
    """vLLM's /tokenize: a raw `prompt`, or chat `messages` rendered as /v1/chat/completions does."""

    model: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    tools: list[Tool] | None = None
    add_special_tokens: bool = True  # no effect: OpenS1's and Intern-S1's tokenizers add no BOS/EOS
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class DetokenizeRequest(_Lenient):
    model: str
    tokens: list[int]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    prompt: str


# ------------------------------------------------------------------ responses


def _now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(BaseModel):
    # OpenAI's legacy format
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "opens1"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
