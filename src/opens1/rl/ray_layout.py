"""Ray layout for RL across nodes: rollout workers as Ray actors, the trainer in the driver.

    driver (trainer, optionally FSDP under torchrun)  --ray.put(weights)-->  RolloutWorker x N
                                                      <--rollouts---------

Each `RolloutWorker` holds a full policy copy inside a `LocalEngine` (OpenS1's KV-cache
generation; on GPU nodes give actors `num_gpus=1`). Weight sync puts the state dict into
Ray's object store once and every worker loads it, so the broadcast costs one copy per
node, not one per worker. The same code runs on one machine with `ray.init(num_cpus=2)`,
which is how CI tests it.

Ray is an optional extra: `pip install 'opens1[ray]'`.
"""

from __future__ import annotations

import torch

from opens1.config import S1Config
from opens1.infer.sampling import SamplingParams
from opens1.models.s1 import S1ForConditionalGeneration
from opens1.rl.rollout import LocalEngine, RolloutEngine


def _ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError("the Ray layout needs Ray: pip install 'opens1[ray]'") from e
    return ray


class RolloutWorker:
    """One rollout actor: builds the policy from its config, then serves generate/update."""

    def __init__(self, config_dict: dict, state_dict: dict, pad_token_id: int, num_threads: int = 1):
        torch.set_num_threads(num_threads)
        model = S1ForConditionalGeneration(S1Config.from_dict(config_dict))
        model.load_state_dict(state_dict)
        self.engine = LocalEngine(model, pad_token_id=pad_token_id, share=True)

    def generate(self, prompts, n, sampling: SamplingParams, seed):
        return self.engine.generate(prompts, n, sampling, seed)

    def update_weights(self, state_dict) -> int:
        self.engine.update_weights(state_dict)
        return self.engine.version


class RayEngine(RolloutEngine):
    """Spread prompts over `num_workers` Ray actors; the RLTrainer uses it like LocalEngine."""

    def __init__(self, model: torch.nn.Module, *, pad_token_id: int, num_workers: int = 2,
                 num_gpus_per_worker: float = 0.0, num_cpus_per_worker: float = 1.0):
        ray = _ray()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker)(RolloutWorker)
        weights = ray.put({k: v.detach().cpu() for k, v in model.state_dict().items()})
        cfg = model.config.to_dict()
        self.workers = [actor.remote(cfg, weights, pad_token_id) for _ in range(num_workers)]
        self.version = 0

    def generate(self, prompts, n, sampling, seed=None):
        ray = _ray()
        k = len(self.workers)
        # prompt i goes to worker i % k; each worker gets its own seed so samples differ
        shards = [list(range(w, len(prompts), k)) for w in range(k)]
        futures = [
            self.workers[w].generate.remote([prompts[i] for i in idx], n, sampling,
                                             None if seed is None else seed + w)
            for w, idx in enumerate(shards) if idx
        ]
        results = ray.get(futures)
        out: list = [None] * len(prompts)
        for idx, res in zip([s for s in shards if s], results):
            for i, r in zip(idx, res):
                out[i] = r
        return out

    def update_weights(self, state_dict) -> None:
        ray = _ray()
        ref = ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
        versions = ray.get([w.update_weights.remote(ref) for w in self.workers])
        self.version += 1
        assert len(set(versions)) == 1, f"rollout workers out of sync: versions {versions}"

    def shutdown(self) -> None:
        ray = _ray()
        for w in self.workers:
            ray.kill(w)
        self.workers = []
