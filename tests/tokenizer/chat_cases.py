"""Conversations for the chat-template tests: every case the real Intern-S1 template handles.

Each case is (name, messages, kwargs) with kwargs tools / enable_thinking /
add_generation_prompt. Media parts name their files "IMAGE_A", "IMAGE_B", "FRAME_1", ...:
`with_files(messages, files)` replaces the names by real paths.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}  # fmt: skip
MOLWT = {"type": "function", "function": {
    "name": "mol_weight", "description": "Molecular weight of a SMILES (g/mol), ünïcode ok",
    "parameters": {"type": "object", "properties": {"smiles": {"type": "string"}}}}}  # fmt: skip
TOOLS = [WEATHER, MOLWT]


def _real_renderings() -> list[tuple[str, list, dict]]:
    data = json.loads((Path(__file__).parent / "data" / "interns1" / "real_renderings.json").read_text(encoding="utf-8"))
    return [(r["name"], r["messages"], {"enable_thinking": r["enable_thinking"],
                                         "add_generation_prompt": r["add_generation_prompt"]}) for r in data]


def _u(text):
    return {"role": "user", "content": text}


def _a(text, **kw):
    return {"role": "assistant", "content": text, **kw}


def _call(name, args, wrap=True):
    fn = {"name": name, "arguments": args}
    return {"id": f"call_{name}", "type": "function", "function": fn} if wrap else fn


TEXT_CASES: list[tuple[str, list, dict]] = [
    ("user, thinking on", [_u("What is 2+2?")], {}),
    ("user, thinking off", [_u("What is 2+2?")], {"enable_thinking": False}),
    ("system and user", [{"role": "system", "content": "You are a chemist."}, _u(f"Is {ASPIRIN} aspirin?")], {}),
    ("system, thinking off", [{"role": "system", "content": "Be brief.\n"}, _u("hi")], {"enable_thinking": False}),
    ("training sample, no reasoning", [{"role": "system", "content": "Be brief."}, _u("hi"), _a("Hello!")],
     {"add_generation_prompt": False}),
    ("training sample, reasoning_content", [_u("2+2?"), _a("4", reasoning_content="\n2 plus 2 is 4.\n")],
     {"add_generation_prompt": False}),
    ("training sample, <think> in content", [_u("2+2?"), _a("<think>\nadd them\n</think>\n\nIt is 4.")],
     {"add_generation_prompt": False}),
    ("multi-turn with reasoning", [_u("2+2?"), _a("4", reasoning_content="add"), _u("and 3+3?"),
                                   _a("6", reasoning_content="add again")], {"add_generation_prompt": False}),
    ("multi-turn, generation prompt", [_u("2+2?"), _a("4", reasoning_content="add"), _u("and 3+3?")], {}),
    ("multi-turn, thinking off", [_u("2+2?"), _a("4"), _u("and 3+3?")], {"enable_thinking": False}),
    ("tools, thinking on", [_u("Weather in Paris?")], {"tools": TOOLS}),
    ("tools with system, thinking off", [{"role": "system", "content": "Use tools."}, _u("Weather in Oslo?")],
     {"tools": [WEATHER], "enable_thinking": False}),
    ("tool call, dict arguments, result", [
        _u("Weather in Paris?"),
        _a("Let me check.", reasoning_content="Need the tool.", tool_calls=[_call("get_weather", {"city": "Paris"})]),
        {"role": "tool", "content": '{"temp": 21, "sky": "clear"}', "tool_call_id": "call_get_weather"},
    ], {"tools": TOOLS}),
    ("tool call, string arguments verbatim, final answer", [
        _u("Weight of aspirin?"),
        _a("", reasoning_content="Use mol_weight.", tool_calls=[_call("mol_weight", '{"smiles":  "' + ASPIRIN + '"}')]),
        {"role": "tool", "content": "180.16"},
        _a("Aspirin weighs 180.16 g/mol.", reasoning_content="The tool said 180.16."),
    ], {"tools": TOOLS, "add_generation_prompt": False}),
    ("several calls in one turn", [
        _u("Weather in Paris and Rome?"),
        _a("Checking both.", tool_calls=[_call("get_weather", {"city": "Paris"}), _call("get_weather", {"city": "Rome"}, wrap=False)]),
        {"role": "tool", "content": '{"temp": 21}'}, {"role": "tool", "content": '{"temp": 25}'},
    ], {"tools": TOOLS}),
    ("multi-step tools, last turn a call", [
        _u("Weather in Paris?"), _a("", tool_calls=[_call("get_weather", {"city": "Paris"})]),
        {"role": "tool", "content": "sunny"}, _a("", reasoning_content="again", tool_calls=[_call("get_weather", {"city": "Nice"})]),
    ], {"tools": TOOLS, "add_generation_prompt": False}),
    ("content as text parts", [{"role": "user", "content": [{"type": "text", "text": "First part."},
                                                            {"type": "text", "text": "\nSecond part."}]}], {}),
    ("science in content", [_u(f"Compare {ASPIRIN} with <SMILES>CCO</SMILES> and MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ."),
                            _a("Both are small; the <IUPAC>2-acetyloxybenzoic acid</IUPAC> is aspirin.", reasoning_content="x")],
     {"add_generation_prompt": False}),
    ("a later system message is dropped", [_u("hi"), {"role": "system", "content": "ignored"}, _a("yo")],
     {"add_generation_prompt": False, "enable_thinking": False}),
    ("reasoning alias and empty content", [_u("think only"), _a("", reasoning="only thoughts")],
     {"add_generation_prompt": False}),
    ("environment role, whitespace and NFD", [_u("Cafe\u0301  \n\n  tabs\tand runs   "),
                                              {"role": "environment", "content": "  result\n"}], {"enable_thinking": False}),
] + _real_renderings()

MEDIA_CASES: list[tuple[str, list, dict]] = [
    ("image then text", [{"role": "user", "content": [{"type": "image", "image": "IMAGE_A"},
                                                      {"type": "text", "text": "What is in the image?"}]}], {}),
    ("text then two images", [{"role": "user", "content": [{"type": "text", "text": "Compare:"},
                                                           {"type": "image", "image": "IMAGE_A"},
                                                           {"type": "image", "image": "IMAGE_B"}]}],
     {"enable_thinking": False}),
    ("video frames", [{"role": "user", "content": [{"type": "video", "video": ["FRAME_1", "FRAME_2", "FRAME_3"]},
                                                   {"type": "text", "text": "What happens?"}]}], {}),
    ("image in a training conversation", [
        {"role": "system", "content": "Describe images."},
        {"role": "user", "content": [{"type": "image", "image": "IMAGE_B"}, {"type": "text", "text": "Describe."}]},
        _a("A gradient.", reasoning_content="look"),
    ], {"add_generation_prompt": False}),
]


def with_files(messages: list, files: dict[str, str]) -> list:
    out = copy.deepcopy(messages)
    for m in out:
        for part in m["content"] if isinstance(m.get("content"), list) else []:
            if part.get("type") == "image":
                part["image"] = files[part["image"]]
            elif part.get("type") == "video":
                part["video"] = [files[f] for f in part["video"]]
    return out
