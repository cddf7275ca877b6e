"""Intern-S1's chat template (ChatML + <think>, InternLM2-style tools) and its parser.

Rendered form (reference §6-7; the parts marked [?] there are decided here):

    <|im_start|>system\n{system}<|im_end|>\n
    <|im_start|>user\n{text | <img><IMG_CONTEXT>..</img> | <TS><TS_CONTEXT>..</TS>}<|im_end|>\n
    <|im_start|>assistant\n<think>\n{reasoning}\n</think>\n{content}
        <|action_start|><|plugin|>\n{"name": ..., "parameters": {...}}\n<|action_end|><|im_end|>\n
    <|im_start|>environment name=<|plugin|>\n{tool result}<|im_end|>\n
    <|im_start|>assistant\n<think>\n          <- generation prompt, thinking on
    <|im_start|>assistant\n                   <- generation prompt, thinking off

* Thinking is on by default: with no system message the default thinking system
  prompt is used. `enable_thinking=False` drops it and does not open <think>.
* Tools (OpenAI `{"type": "function", "function": {...}}` or bare function dicts)
  are listed in the system message after "# External Tools", one JSON object a line.
* Tool calls are JSON with `name` and `parameters` (not `arguments`); results come
  back as the `environment` role (InternLM2's convention), from `tool` messages.

The renderer yields segments; `render_ids` turns them into ids with control tokens
as real special ids and every message content encoded as plain text, so a user who
types "<|im_end|>" gets text tokens, never the control token. Images and series are
`media` segments that the Processor expands. `TEMPLATE_HASH` (sha256 of the
template's definition) identifies the format in eval reports.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

TEMPLATE_VERSION = "opens1-interns1-chatml/1"
DEFAULT_THINKING_SYSTEM_PROMPT = (
    "You are an expert reasoner with extensive experience in all areas. You approach problems through "
    "systematic thinking and rigorous reasoning. Your response should reflect deep understanding and "
    "precise logical thinking, making your solution path and reasoning clear to others. Please put your "
    "thinking process within <think>...</think> tags."
)
TOOLS_HEADER = "# External Tools\nYou have access to these tools:\n"
TOOL_ROLE = "environment name="  # followed by <|plugin|>

# Everything that defines the rendered format; its hash names the template version.
_DEFINITION = {
    "version": TEMPLATE_VERSION,
    "turn": ["<|im_start|>", "{role}\n", "{content}", "<|im_end|>", "\n"],
    "thinking_system": DEFAULT_THINKING_SYSTEM_PROMPT,
    "tools_header": TOOLS_HEADER,
    "tools_join": "\n\n",
    "tools_format": "one json.dumps(function spec) per line",
    "think": ["<think>", "\n{reasoning}\n", "</think>", "\n"],
    "generation_prompt": {"thinking": "assistant\n<think>\n", "plain": "assistant\n"},
    "tool_call": ["<|action_start|>", "<|plugin|>", "\n{json name+parameters}\n", "<|action_end|>"],
    "tool_result": [TOOL_ROLE, "<|plugin|>", "\n{content}"],
    "image": ["<img>", "<IMG_CONTEXT>*n", "</img>"],
    "time_series": ["<TS>", "<TS_CONTEXT>*n", "</TS>"],
}
# The same format as a Jinja chat template, for HF `apply_chat_template` and serving
# engines (vLLM, SGLang). It renders text exactly like `render_text` (media parts as
# single placeholders; tool-call arguments given as JSON strings are inserted verbatim).
CHAT_TEMPLATE = (
    "{%- set nl = '\\n' -%}"  # newlines as expressions: whitespace control would eat literal ones
    "{%- set thinking = enable_thinking if enable_thinking is defined else true -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set sys = messages[0].content if messages[0].content is string else "
    "messages[0].content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set sys = " + json.dumps(DEFAULT_THINKING_SYSTEM_PROMPT) + " if thinking else none -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- if tools -%}"
    "{%- set ns = namespace(block=" + json.dumps(TOOLS_HEADER) + ") -%}"
    "{%- for t in tools -%}"
    "{%- set ns.block = ns.block ~ (nl if not loop.first else '') ~ "
    "((t.function if (t.type is defined and t.type == 'function' and t.function is defined) else t) | tojson) -%}"
    "{%- endfor -%}"
    "{%- set sys = ns.block if not sys else sys ~ nl ~ nl ~ ns.block -%}"
    "{%- endif -%}"
    "{%- macro content(c) -%}"
    "{%- if c is string -%}{{ c }}{%- elif c -%}{%- for p in c -%}"
    "{%- if p.type == 'text' -%}{{ p.text }}"
    "{%- elif p.type == 'time_series' -%}<TS><TS_CONTEXT></TS>"
    "{%- else -%}<img><IMG_CONTEXT></img>{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if sys is not none -%}<|im_start|>system{{ nl }}{{ sys }}<|im_end|>{{ nl }}{%- endif -%}"
    "{%- for m in loop_messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "<|im_start|>assistant{{ nl }}"
    "{%- set r = m.reasoning_content if m.reasoning_content is defined else (m.reasoning if m.reasoning is defined else none) -%}"
    "{%- if r -%}<think>{{ nl }}{{ r }}{{ nl }}</think>{{ nl }}{%- endif -%}"
    "{{ content(m.content) }}"
    "{%- if m.tool_calls is defined and m.tool_calls -%}{%- for call in m.tool_calls -%}"
    "{%- set f = call.function if call.function is defined else call -%}"
    "{%- set a = f.parameters if f.parameters is defined else (f.arguments if f.arguments is defined else {}) -%}"
    "<|action_start|><|plugin|>{{ nl }}{\"name\": {{ f.name | tojson }}, \"parameters\": "
    "{{ a if a is string else a | tojson }}}{{ nl }}<|action_end|>"
    "{%- endfor -%}{%- endif -%}"
    "<|im_end|>{{ nl }}"
    "{%- elif m.role in ['tool', 'environment', 'function'] -%}"
    "<|im_start|>" + TOOL_ROLE + "<|plugin|>{{ nl }}{{ content(m.content) }}<|im_end|>{{ nl }}"
    "{%- else -%}"
    "<|im_start|>{{ m.role }}{{ nl }}{{ content(m.content) }}<|im_end|>{{ nl }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant{{ nl }}{%- if thinking -%}<think>{{ nl }}{%- endif -%}{%- endif -%}"
)
# sha256 of everything that defines the format (the structure above and its Jinja twin)
TEMPLATE_HASH = hashlib.sha256(
    json.dumps({**_DEFINITION, "jinja": CHAT_TEMPLATE}, sort_keys=True).encode("utf-8")
).hexdigest()


@dataclass
class Segment:
    kind: str  # "text", "special" (a control token string) or "media" (an image / series part)
    value: Any
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


# ---------------------------------------------------------------- rendering


def _tool_spec(tool: dict) -> dict:
    if not isinstance(tool, dict):
        raise ValueError(f"a tool must be a dict, got {type(tool).__name__}")
    return tool["function"] if tool.get("type") == "function" and "function" in tool else tool


def _call_payload(call: dict) -> str:
    """An assistant tool call (OpenAI or InternLM style) -> the JSON Intern-S1 writes."""
    fn = call.get("function", call)
    if "name" not in fn:
        raise ValueError(f"tool call without a name: {call!r}")
    args = fn.get("parameters", fn.get("arguments", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"tool call arguments are not JSON: {args!r}") from e
    return json.dumps({"name": fn["name"], "parameters": args}, ensure_ascii=False)


def _content_segments(content, train: bool) -> list[Segment]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Segment("text", content, train)] if content else []
    if not isinstance(content, list):
        raise ValueError(f"message content must be a str or a list of parts, got {type(content).__name__}")
    out = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out.append(Segment("text", part.get("text", ""), train))
        elif kind in ("image", "image_url", "time_series"):
            out.append(Segment("media", part, False))
        else:
            raise ValueError(f"unknown content part {part!r}; expected type text, image, image_url or time_series")
    return out


def _template_segments(text: str, template_owned: bool) -> list[Segment]:
    """Template-owned text (the default system prompt) keeps its control-token strings as
    control tokens, as string-based template engines (HF, vLLM) produce for the real
    checkpoints: the prompt's "<think>...</think>" are the <think> and </think> tokens.
    User-provided text never does."""
    if not text:
        return []
    if not template_owned:
        return [Segment("text", text)]
    out = []
    for piece in re.split(r"(</?think>)", text):
        if piece in ("<think>", "</think>"):
            out.append(Segment("special", piece))
        elif piece:
            out.append(Segment("text", piece))
    return out


def _text_of(content) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content or ""


def render(
    messages: list[dict],
    tools: list[dict] | None = None,
    enable_thinking: bool = True,
    add_generation_prompt: bool = True,
) -> list[Segment]:
    """Chat messages -> segments (text, control tokens, media), with training flags."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    segs: list[Segment] = []

    def turn(role_text: str, body: list[Segment], train: bool = False):
        segs.append(Segment("special", "<|im_start|>"))
        segs.append(Segment("text", role_text))
        segs.extend(body)
        segs.append(Segment("special", "<|im_end|>", train))
        segs.append(Segment("text", "\n"))

    # system: the user's, else the default thinking prompt; tools appended to it
    system = None
    rest = messages
    default_prompt = False
    if messages and messages[0]["role"] == "system":
        system, rest = _text_of(messages[0].get("content")), messages[1:]
    elif enable_thinking:
        system, default_prompt = DEFAULT_THINKING_SYSTEM_PROMPT, True
    tool_segs: list[Segment] = []
    if tools:  # one compact JSON object per tool and line (easy to mirror in Jinja)
        block = TOOLS_HEADER + "\n".join(json.dumps(_tool_spec(t), ensure_ascii=False) for t in tools)
        tool_segs = [Segment("text", (_DEFINITION["tools_join"] if system else "") + block)]
        system = system or ""
    if system is not None:
        turn("system\n", _template_segments(system, default_prompt) + tool_segs)

    for m in rest:
        role = m["role"]
        if role == "system":
            turn("system\n", _content_segments(m.get("content"), False))
        elif role == "user":
            turn("user\n", _content_segments(m.get("content"), False))
        elif role == "assistant":
            body: list[Segment] = []
            reasoning = m.get("reasoning_content", m.get("reasoning"))
            if reasoning:
                body += [Segment("special", "<think>", True), Segment("text", f"\n{reasoning}\n", True)]
                body += [Segment("special", "</think>", True), Segment("text", "\n", True)]
            body += _content_segments(m.get("content"), True)
            for call in m.get("tool_calls") or []:
                body += [Segment("special", "<|action_start|>", True), Segment("special", "<|plugin|>", True)]
                body += [Segment("text", f"\n{_call_payload(call)}\n", True), Segment("special", "<|action_end|>", True)]
            turn("assistant\n", body, train=True)
        elif role in ("tool", "environment", "function"):
            body = [Segment("special", "<|plugin|>"), Segment("text", "\n")] + _content_segments(m.get("content"), False)
            turn(TOOL_ROLE, body)
        else:
            raise ValueError(f"unknown chat role {role!r}; expected system, user, assistant or tool")

    if add_generation_prompt:
        segs.append(Segment("special", "<|im_start|>"))
        segs.append(Segment("text", "assistant\n"))
        if enable_thinking:
            segs += [Segment("special", "<think>"), Segment("text", "\n")]
    return segs


def render_text(messages: list[dict], tools=None, enable_thinking: bool = True, add_generation_prompt: bool = True) -> str:
    """The prompt as a string (for display and text-completion APIs). Media parts are shown
    as `<img><IMG_CONTEXT></img>` / `<TS><TS_CONTEXT></TS>`; never tokenize this string
    back, since control-token strings in it would become text: use `render_ids`."""
    out = []
    for s in render(messages, tools, enable_thinking, add_generation_prompt):
        if s.kind == "media":
            out.append("<TS><TS_CONTEXT></TS>" if s.value.get("type") == "time_series" else "<img><IMG_CONTEXT></img>")
        else:
            out.append(s.value)
    return "".join(out)


def render_ids(
    tokenizer,
    messages: list[dict],
    tools=None,
    enable_thinking: bool = True,
    add_generation_prompt: bool = True,
    media: Callable[[dict], list[int]] | None = None,
) -> tuple[list[int], list[bool]]:
    """(ids, train_mask): control tokens as special ids, contents encoded as plain text.
    `media(part) -> ids` expands image / series parts (the Processor provides it)."""
    segs = render(messages, tools, enable_thinking, add_generation_prompt)
    # merge runs of text with the same training flag, so BPE sees whole strings
    merged: list[Segment] = []
    for s in segs:
        if s.kind == "text" and merged and merged[-1].kind == "text" and merged[-1].train == s.train:
            merged[-1] = Segment("text", merged[-1].value + s.value, s.train)
        else:
            merged.append(s)
    texts = [s.value for s in merged if s.kind == "text"]
    encoded = iter(tokenizer.encode_batch(texts))
    ids: list[int] = []
    mask: list[bool] = []
    for s in merged:
        if s.kind == "text":
            piece = next(encoded)
        elif s.kind == "special":
            piece = [tokenizer.encode_special(s.value)]
        else:
            if media is None:
                raise ValueError("messages contain images or time series: use opens1.Processor to render them")
            piece = media(s.value)
        ids.extend(piece)
        mask.extend([s.train] * len(piece))
    return ids, mask


# ---------------------------------------------------------------- parsing

_STOP = re.compile(r"<\|im_end\|>|<\|endoftext\|>")
_CALL = re.compile(r"<\|action_start\|>\s*<\|plugin\|>\s*(.*?)\s*(?:<\|action_end\|>|\Z)", re.S)


def parse_response(text: str, prompt_ends_in_think: bool = False) -> ParsedResponse:
    """Generated text (decoded with special tokens kept) -> reasoning, content, tool calls.

    The generation prompt may already contain `<think>`, so the reasoning can lack its
    opening tag: any text before `</think>` is reasoning. Without `</think>`, the text is
    reasoning only if it opens with `<think>` or `prompt_ends_in_think` (a cut-off thought).
    A tool-call block whose JSON does not parse stays in the content."""
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
