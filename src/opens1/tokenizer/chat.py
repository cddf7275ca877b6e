"""Intern-S1's chat template, exactly, and the parser of what the model writes.

The format is the real checkpoints' `chat_template.jinja` (REAL_CHAT_TEMPLATE below, verbatim):
`render` reproduces what transformers renders with it (`render_jinja_template`: jinja2 with
trim_blocks / lstrip_blocks and a `tojson` that is `json.dumps(ensure_ascii=False)`).

    <|im_start|>system[ name=<|plugin|>]\n{system}<|im_end|>\n      (see below)
    <|im_start|>user\n{content}<|im_end|>\n
    <|im_start|>assistant\n<think>\n{reasoning}\n</think>\n{content}{tool calls}<|im_end|>\n
    <|im_start|>environment name=<|plugin|>\n{tool result}<|im_end|>\n
    <|im_start|>assistant\n<think>         <- generation prompt, thinking on (the default)
    <|im_start|>assistant\n                <- generation prompt, thinking off

* System: the first message if it is a system message (later system messages are dropped),
  else, with thinking on, the default thinking prompt. With tools it is followed by the tool
  instruction and `tools | tojson(indent=2)`, and the header gets ` name=<|plugin|>`.
* Assistant turns after the last user message get a think block (an empty
  `<think>\n\n</think>\n` without reasoning); earlier ones lose their reasoning. Reasoning comes
  from `reasoning_content` (or `thinking` / `reasoning`, which transformers aliases), else
  from a `<think>..</think>` inside the content.
* Tool calls: `<|action_start|><|plugin|>\n{"name": "N", "parameters": ARGS}\n<|action_end|>`,
  joined by newlines, after the content; ARGS is `arguments` verbatim if it is a string,
  else its JSON. Tool results are the `environment` role.
* Content lists: each part is preceded by a newline (then leading newlines are stripped):
  text, an image (`<IMG_CONTEXT>` placeholder), a video (`<video>` placeholder, expanded by
  the Processor into `Frame1: <img>..</img>` lines).

OpenS1's additions, where the real template would fail or has nothing: `content: None` is an
empty string, `image_url` parts are images, `time_series` parts render a `<TS_CONTEXT>`
placeholder, and unknown part types or roles are an error instead of being dropped.
CHAT_TEMPLATE is the real template with exactly these additions: the Jinja template written
next to exported checkpoints, which renders what `render_text` renders.

Safety: text the template owns (headers, the default prompts, the tool instruction, the
tool-call frame) is tokenized with its added-token strings as tokens, as transformers does;
message contents (text, reasoning, tool names, arguments, tool specs) keep control-token
strings such as "<|im_end|>" as plain text, so a user cannot forge a turn. Domain tags
(<SMILES>...) in content stay markup. `special_tokens_in_content=True` gives the HF / vLLM
behaviour (everything parsed), which is then exactly transformers' ids.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

# the real template (data/interns1/chat_template.jinja in the tests), verbatim
REAL_CHAT_TEMPLATE = """{% set default_thinking_sys %}You are an expert reasoner with extensive experience in all areas. You approach problems through systematic thinking and rigorous reasoning. Your response should reflect deep understanding and precise logical thinking, making your solution path and reasoning clear to others. Please put your thinking process within <think>...</think> tags.{% endset %}
{%- set tool_instruction %}Your response should consist of a reasoning step (**thought**) followed immediately by a function call in valid JSON format. Wrap each function call using the `<|action_start|><|plugin|>` and `<|action_end|>` tags.

**Format example:**

```
(Your thought goes here...)

<|action_start|><|plugin|>
{
    "name": "tool_name",
    "parameters": {
        "parameter1": "value1",
        "parameter2": "value2"
    }
}
<|action_end|>
```

# External Tools
You have access to these tools:
{% if tools %}{{ tools | tojson(indent=2) }}{% else %}[]{% endif %}{% endset %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
  {%- set role = message.role if message.role != 'tool' else 'environment' %}
  {%- set reasoning_content = '' %}
  {%- set content = message.content %}
  {%- set ns.tool_calls = '' %}
  {%- if role == 'assistant' %}
    {%- if message.reasoning_content is string %}
      {%- set reasoning_content = message.reasoning_content %}
    {%- elif '</think>' in content %}
      {%- set reasoning_content = content.split('</think>')[0].strip().split('<think>')[-1].strip() %}
      {%- set content = content.split('</think>')[-1].lstrip('
') %}
    {%- endif %}
    {%- if message.tool_calls %}
      {%- for tool_call in message.tool_calls %}
        {%- if not loop.first %}
            {%- set ns.tool_calls = ns.tool_calls + '
' %}
        {%- endif %}
        {%- if tool_call.function %}
            {%- set tool_call = tool_call.function %}
        {%- endif %}
        {%- set ns.tool_calls = ns.tool_calls + '<|action_start|><|plugin|>
{"name": "' + tool_call.name + '", "parameters": ' %}
        {%- if tool_call.arguments is string %}
            {%- set ns.tool_calls = ns.tool_calls + tool_call.arguments %}
        {%- else %}
            {%- set ns.tool_calls = ns.tool_calls + tool_call.arguments | tojson %}
        {%- endif %}
        {%- set ns.tool_calls = ns.tool_calls + '}
<|action_end|>' %}
        {%- endfor %}
    {%- endif %}
  {%- set reasoning_content = '<think>
' + reasoning_content.strip('
') + '
</think>
' %}
  {%- endif %}
  {%- if not content is string %}
    {%- set ns.content = '' %}
    {%- for _content in message.content %}
      {%- if _content.type == 'image' %}
        {%- set ns.content = ns.content ~ '
<IMG_CONTEXT>' %}
      {%- elif _content.type == 'video' %}
        {%- set ns.content = ns.content ~ '
<video>' %}
      {%- elif _content.type == 'text' %}
        {%- set ns.content = ns.content ~ '
' ~ _content.text %}
      {%- endif %}
    {%- endfor %}
    {%- set content = ns.content %}
  {%- endif %}
  {%- set content = content.lstrip('
') %}
  {%- if ns.tool_calls %}
    {%- set content = content + ns.tool_calls %}
  {%- endif %}
  {%- if loop.index0 == 0 %}
    {%- set system_prompt = '' %}
    {%- if role == 'system' %}
      {%- set system_prompt = system_prompt + content %}
    {%- elif enable_thinking is not defined or enable_thinking %}
      {%- set system_prompt = system_prompt + default_thinking_sys %}
    {%- endif %}
    {%- if tools %}
      {%- set system_prompt = system_prompt.rstrip('
') + '

' + tool_instruction %}
    {%- endif %}
    {%- set system_prompt = system_prompt.strip('
') %}
  {%- endif %}
{%- if loop.index0 == 0 and system_prompt %}<|im_start|>system{% if tools %} name=<|plugin|>{% endif %}

{{ system_prompt }}<|im_end|>
{% endif %}
{%- if role != 'system' %}<|im_start|>{{ role }}{% if role == 'environment' or role == 'tool' %} name=<|plugin|>{% endif %}

{% if loop.index0 > ns.last_query_index and (loop.last or (not loop.last and reasoning_content)) %}{{ reasoning_content }}
{%- endif %}{{ content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is not defined or enable_thinking %}
<think>{% endif %}
{% endif %}"""

_TEMPLATE_EDITS = (  # (real text, OpenS1's text): each occurs exactly once in the real template
    ("  {%- set content = message.content %}\n",
     "  {%- set content = message.content if message.content is not none else '' %}\n"),
    ("      {%- if _content.type == 'image' %}\n",
     "      {%- if _content.type == 'image' or _content.type == 'image_url' %}\n"),
    ("      {%- elif _content.type == 'text' %}\n",
     "      {%- elif _content.type == 'time_series' %}\n"
     "        {%- set ns.content = ns.content ~ '\n<TS_CONTEXT>' %}\n"
     "      {%- elif _content.type == 'text' %}\n"),
)  # fmt: skip


def _opens1_template() -> str:
    t = REAL_CHAT_TEMPLATE
    for old, new in _TEMPLATE_EDITS:
        if t.count(old) != 1:
            raise AssertionError(f"template edit does not apply: {old!r}")
        t = t.replace(old, new)
    return t


CHAT_TEMPLATE = _opens1_template()
TEMPLATE_VERSION = "interns1-chat-template/1"
TEMPLATE_HASH = hashlib.sha256((TEMPLATE_VERSION + CHAT_TEMPLATE).encode("utf-8")).hexdigest()

DEFAULT_THINKING_SYSTEM_PROMPT = (
    "You are an expert reasoner with extensive experience in all areas. You approach problems through "
    "systematic thinking and rigorous reasoning. Your response should reflect deep understanding and "
    "precise logical thinking, making your solution path and reasoning clear to others. Please put your "
    "thinking process within <think>...</think> tags."
)
TOOL_INSTRUCTION = (
    "Your response should consist of a reasoning step (**thought**) followed immediately by a function call "
    "in valid JSON format. Wrap each function call using the `<|action_start|><|plugin|>` and `<|action_end|>` "
    "tags.\n\n**Format example:**\n\n```\n(Your thought goes here...)\n\n<|action_start|><|plugin|>\n{\n"
    '    "name": "tool_name",\n    "parameters": {\n        "parameter1": "value1",\n'
    '        "parameter2": "value2"\n    }\n}\n<|action_end|>\n```\n\n# External Tools\n'
    "You have access to these tools:\n"
)
ROLES = ("system", "user", "assistant", "tool", "environment")
PLACEHOLDERS = {"image": "<IMG_CONTEXT>", "image_url": "<IMG_CONTEXT>", "video": "<video>", "time_series": "<TS_CONTEXT>"}
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # transformers' aliases, in its order


@dataclass
class Segment:
    kind: str  # "owned" (template text), "content" (message text) or "media" (a part to expand)
    value: Any  # the text, or the media part
    train: bool = False  # part of an assistant reply: trained on (labels != -100)


@dataclass
class ToolCall:
    name: str
    arguments: dict

    def to_openai(self, index: int = 0) -> dict:
        return {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass
class ParsedResponse:
    reasoning: str | None  # None: no reasoning block
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


# ---------------------------------------------------------------- segment lists as strings


def _text(segs: list[Segment]) -> str:
    return "".join(PLACEHOLDERS[s.value["type"]] if s.kind == "media" else s.value for s in segs)


def _lstrip(segs: list[Segment], chars: str = "\n") -> list[Segment]:
    out = list(segs)
    while out and out[0].kind != "media":
        v = out[0].value.lstrip(chars)
        if v:
            out[0] = replace(out[0], value=v)
            break
        out.pop(0)
    return out


def _rstrip(segs: list[Segment], chars: str = "\n") -> list[Segment]:
    out = list(segs)
    while out and out[-1].kind != "media":
        v = out[-1].value.rstrip(chars)
        if v:
            out[-1] = replace(out[-1], value=v)
            break
        out.pop()
    return out


# ---------------------------------------------------------------- rendering


def _content(content, train: bool) -> list[Segment]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Segment("content", content, train)] if content else []
    if not isinstance(content, list):
        raise ValueError(f"message content must be a str or a list of parts, got {type(content).__name__}")
    out: list[Segment] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text", "")
            if not isinstance(text, str):
                raise ValueError(f"a text part needs a string 'text', got {type(text).__name__}")
            out += [Segment("owned", "\n", train), Segment("content", text, train)]
        elif kind in PLACEHOLDERS:
            out += [Segment("owned", "\n", train), Segment("media", part, train)]
        else:
            raise ValueError(f"unknown content part {part!r}; expected type text, image, image_url, video or time_series")
    return out


def _reasoning_of(m: dict):
    return next((m[k] for k in _REASONING_KEYS if m.get(k) is not None), None)


def _tool_calls(calls, train: bool) -> list[Segment]:
    out: list[Segment] = []
    for k, call in enumerate(calls):
        if not isinstance(call, dict):
            raise ValueError(f"a tool call must be a dict, got {type(call).__name__}")
        fn = call["function"] if call.get("function") else call
        name, args = fn.get("name"), fn.get("arguments")
        if not isinstance(name, str):
            raise ValueError(f"tool call without a string name: {call!r}")
        if args is None:
            raise ValueError(f"tool call {name!r} has no 'arguments' (a JSON string or an object)")
        if k:
            out.append(Segment("owned", "\n", train))
        out += [
            Segment("owned", '<|action_start|><|plugin|>\n{"name": "', train),
            Segment("content", name, train),
            Segment("owned", '", "parameters": ', train),
            Segment("content", args if isinstance(args, str) else json.dumps(args, ensure_ascii=False), train),
            Segment("owned", "}\n<|action_end|>", train),
        ]
    return out


def _check(messages, tools) -> None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    for m in messages:
        if m["role"] not in ROLES:
            raise ValueError(f"unknown chat role {m['role']!r}; expected one of {', '.join(ROLES)}")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise ValueError("tools must be a list of dicts (OpenAI function specs)")


def _last_query(messages: list[dict]) -> int:
    """Index of the last user message (the last message if there is none)."""
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), len(messages) - 1)


def _assistant(m: dict, train: bool) -> tuple[Any, list[Segment], list[Segment]]:
    """An assistant message's content (a `<think>..</think>` taken out of it), its think block
    and its tool calls."""
    content = m.get("content")
    reasoning = ""
    r = _reasoning_of(m)
    if isinstance(r, str):
        reasoning = r
    elif isinstance(content, str) and "</think>" in content:
        reasoning = content.split("</think>")[0].strip().split("<think>")[-1].strip()
        content = content.split("</think>")[-1].lstrip("\n")
    calls = _tool_calls(m["tool_calls"], train) if m.get("tool_calls") else []
    think = [Segment("owned", "<think>\n", train), Segment("content", reasoning.strip("\n"), train),
             Segment("owned", "\n</think>\n", train)]  # fmt: skip
    return content, think, calls


def _system(role: str, body: list[Segment], tools, *, enable_thinking: bool) -> list[Segment]:
    """The first turn's system block: the system message, else (thinking on) the default
    thinking prompt, then the tool instruction and specs; nothing if all are absent."""
    system: list[Segment] = []
    if role == "system":
        system = body
    elif enable_thinking:
        system = [Segment("owned", DEFAULT_THINKING_SYSTEM_PROMPT)]
    if tools:
        spec = json.dumps(tools, ensure_ascii=False, indent=2)
        system = _rstrip(system) + [Segment("owned", "\n\n" + TOOL_INSTRUCTION), Segment("content", spec)]
    system = _rstrip(_lstrip(system))
    if not system:
        return []
    head = "<|im_start|>system" + (" name=<|plugin|>" if tools else "") + "\n"
    return [Segment("owned", head)] + system + [Segment("owned", "<|im_end|>\n")]


def render(
    messages: list[dict],
    tools: list[dict] | None = None,
    *,
    enable_thinking: bool = True,
    add_generation_prompt: bool = True,
) -> list[Segment]:
    """Chat messages -> segments (template text, message text, media), with training flags."""
    _check(messages, tools)
    last_query = _last_query(messages)
    segs: list[Segment] = []
    for i, m in enumerate(messages):
        role = "environment" if m["role"] == "tool" else m["role"]
        train = role == "assistant"
        content, think, calls = _assistant(m, train) if train else (m.get("content"), [], [])
        body = _lstrip(_content(content, train)) + calls
        if i == 0:
            segs += _system(role, body, tools, enable_thinking=enable_thinking)
        if role == "system":
            continue  # a system message is the first turn's prompt or nothing
        head = "<|im_start|>" + role + (" name=<|plugin|>" if role == "environment" else "") + "\n"
        segs.append(Segment("owned", head))
        if i > last_query and role == "assistant":
            segs += think
        segs += body + [Segment("owned", "<|im_end|>", train), Segment("owned", "\n")]
    if add_generation_prompt:
        segs.append(Segment("owned", "<|im_start|>assistant\n" + ("<think>" if enable_thinking else "")))
    return [s for s in segs if s.kind == "media" or s.value]


def render_text(messages: list[dict], tools=None, *, enable_thinking: bool = True, add_generation_prompt: bool = True) -> str:
    """The prompt as the real template renders it (media parts as their placeholders), i.e.
    transformers' apply_chat_template(..., tokenize=False)."""
    return _text(render(messages, tools, enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt))


def render_ids(
    tokenizer,
    messages: list[dict],
    tools=None,
    *,
    enable_thinking: bool = True,
    add_generation_prompt: bool = True,
    media: Callable[[dict], list[Segment]] | None = None,
    special_tokens_in_content: bool = False,
) -> tuple[list[int], list[bool]]:
    """(ids, train_mask) of the rendered conversation. The whole prompt is encoded as one
    text (so BPE and domain detection see exactly the rendered string); template text has
    its added tokens parsed, message contents do not unless `special_tokens_in_content`.
    `media(part) -> segments` expands image / video / series parts (the Processor's job)."""
    segs = render(messages, tools, enable_thinking=enable_thinking, add_generation_prompt=add_generation_prompt)
    pieces: list[tuple[str, str]] = []
    flags: list[bool] = []
    content_mode = "all" if special_tokens_in_content else "content"
    for s in segs:
        if s.kind == "media":
            if media is None:
                raise ValueError("messages contain images, videos or time series: use opens1.Processor to render them")
            expanded = [replace(x, train=s.train) for x in media(s.value)]
        else:
            expanded = [s]
        for x in expanded:
            pieces.append((x.value, "all" if x.kind == "owned" else content_mode))
            flags.append(x.train)
    ids, where = tokenizer.encode_pieces(pieces)
    return ids, [flags[k] for k in where]


# ---------------------------------------------------------------- parsing

_STOP = re.compile(r"<\|im_end\|>|<\|endoftext\|>")
_CALL = re.compile(r"<\|action_start\|>\s*<\|plugin\|>\s*(.*?)\s*(?:<\|action_end\|>|\Z)", re.S)


def parse_response(text: str, *, prompt_ends_in_think: bool = False) -> ParsedResponse:
    """Generated text (decoded with special tokens kept) -> reasoning, content, tool calls.

    The generation prompt may already contain `<think>`, so the reasoning can lack its
    opening tag: any text before `</think>` is reasoning. Without `</think>`, the text is
    reasoning only if it opens with `<think>` or `prompt_ends_in_think` (a cut-off thought).
    Tool calls are Intern-S1's `<|action_start|><|plugin|>\\n{"name": .., "parameters": ..}
    \\n<|action_end|>` blocks (`arguments` is accepted for `parameters`); a block whose JSON
    does not parse stays in the content."""
    stop = _STOP.search(text)
    if stop:
        text = text[: stop.start()]
    reasoning = None
    if "</think>" in text:
        head, text = text.split("</think>", 1)
        head = head.lstrip()
        reasoning = (head[len("<think>") :] if head.startswith("<think>") else head).strip("\n")
    elif text.lstrip().startswith("<think>"):
        reasoning, text = text.lstrip()[len("<think>") :].strip("\n"), ""
    elif prompt_ends_in_think:
        reasoning, text = text.strip("\n"), ""
    calls: list[ToolCall] = []

    def take(m: re.Match) -> str:
        try:
            obj = json.loads(m.group(1))
        except json.JSONDecodeError:
            return m.group(0)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return m.group(0)
        args = obj.get("parameters", obj.get("arguments", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = {"input": args}
        calls.append(ToolCall(obj["name"], args if isinstance(args, dict) else {"input": args}))
        return ""

    content = _CALL.sub(take, text) if "<|action_start|>" in text else text
    return ParsedResponse(reasoning=reasoning, content=content.strip(), tool_calls=calls)
