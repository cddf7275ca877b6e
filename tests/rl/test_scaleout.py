"""Scale-out paths of the RL trainer on one CPU machine: Ray rollout workers, and the FSDP2
trainer under a 2-rank gloo process group."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

import opens1
from opens1.infer.sampling import SamplingParams
from opens1.rl.rollout import LocalEngine
from tests.conftest import GLOO_TEARDOWN_RERUN
from tests.rl.conftest import tiny_parts as _tiny




@pytest.mark.slow
def test_ray_engine_matches_local_and_syncs_weights():
    ray = pytest.importorskip("ray")
    from opens1.rl.ray_layout import RayEngine

    tok, proc, model = _tiny()
    prompts = [proc([{"role": "user", "content": f"Count to {i}."}], enable_thinking=False) for i in range(3)]
    greedy = SamplingParams(max_new_tokens=5, temperature=0.0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        engine = RayEngine(model, num_workers=2, pad_token_id=tok.pad_token_id)
        local = LocalEngine(model, pad_token_id=tok.pad_token_id)
        ids = lambda outs: [g[0].response_ids for g in outs]  # noqa: E731
        assert ids(engine.generate(prompts, 1, greedy)) == ids(local.generate(prompts, 1, greedy))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.5)
        engine.update_weights(model.state_dict())
        local.update_weights(model.state_dict())
        assert ids(engine.generate(prompts, 1, greedy)) == ids(local.generate(prompts, 1, greedy))
        sampled = engine.generate(prompts[:1], 4, SamplingParams(max_new_tokens=5, temperature=1.0), seed=0)
        assert len(sampled) == 1 and len(sampled[0]) == 4
    finally:
        ray.shutdown()


FSDP_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch, torch.distributed as dist
    import opens1
    from opens1.config import get_preset
    from opens1.models.s1 import S1ForConditionalGeneration
    from opens1.processing.processor import Processor, configure
    from opens1.rl.trainer import RLConfig, RLTrainer
    from opens1.train.trainer import shutdown_distributed
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    tok = opens1.load_tokenizer()
    cfg = get_preset("debug"); cfg.vision = None; cfg.timeseries = None
    cfg.text.vocab_size = (len(tok) + 63) // 64 * 64
    configure(tok, cfg)
    model = S1ForConditionalGeneration(cfg)
    tr = RLTrainer(model, tok, Processor(tok, cfg), RLConfig(envs=["logic/counting"], prompts_per_step=2,
                   rollouts_per_prompt=4, max_new_tokens=4, temperature=1.5, heldout_items=2))
    res = tr.train(steps=2)
    sd = tr.full_state_dict()
    ok = all(torch.equal(a, b) for a, b in zip(sd.values(), tr.engine.model.state_dict().values()))
    tr.export(sys.argv[1])
    print(json.dumps({"rank": dist.get_rank(), "steps": res.steps, "synced": ok}))
    del tr, model
    shutdown_distributed()
""")


@pytest.mark.slow
@GLOO_TEARDOWN_RERUN
def test_fsdp_rl_two_ranks_gloo(tmp_path):
    script = tmp_path / "rl_fsdp.py"
    script.write_text(FSDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(script), str(tmp_path / "model")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a crash shows its stacks
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 2
    assert all('"synced": true' in l and '"steps": 2' in l for l in lines)
    reloaded = opens1.load_model(tmp_path / "model")
    assert reloaded.config.text.num_hidden_layers == 2
