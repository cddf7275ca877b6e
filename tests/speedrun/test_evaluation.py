"""Held-out evaluation: batched greedy decoding, and the `opens1 eval` line that reproduces it."""

import re
import shlex
from pathlib import Path

import opens1
from opens1.envs import get_env
from opens1.infer.sampling import SamplingParams
from opens1.rl.rollout import LocalEngine, response_text
from opens1.speedrun.evaluation import greedy_texts
from opens1.speedrun.model import TINY_TOKENIZER, build_model


def test_equal_length_series_prompts_are_generated_as_one_batch():
    tok = opens1.load_tokenizer(TINY_TOKENIZER)
    model, proc = build_model("tiny", tok, 0)
    env = get_env("physics/signal_frequency")
    prompts = [proc(c.messages(), enable_thinking=False) for c in env.cases(5, "heldout")]
    prompts.insert(2, proc([{"role": "user", "content": "How many rings has c1ccccc1?"}], enable_thinking=False))
    engine = LocalEngine(model, pad_token_id=tok.pad_token_id, share=True)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0, stop_token_ids=(tok.eos_token_id,), vocab_limit=len(tok))
    calls = []
    real = engine.generate
    engine.generate = lambda ps, *a, **k: calls.append(len(ps)) or real(ps, *a, **k)
    texts = greedy_texts(engine, tok, prompts, greedy)
    assert calls == [1, 1]  # the text prompt, then the five series prompts stacked in one prompt
    one_by_one = [response_text(tok, real([p], 1, greedy, seed=0)[0][0]) for p in prompts]
    assert texts == one_by_one


def test_documented_reproduction_command_parses():
    """docs/evaluation.md's `opens1 eval` line for a speedrun model: greedy, no thinking, 16 tokens."""
    from opens1.cli.eval import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    line = re.search(r"\$ (opens1 eval --model runs/speedrun/model .*?)\n\s*```", doc, re.S).group(1)
    args = build_parser().parse_args(shlex.split(line.replace("\\\n", " "))[2:])
    assert args.temperature == 0 and args.max_tokens == 16 and args.no_thinking and args.n_items == 400
