"""Training: continued pretraining, multimodal pretraining and SFT (see trainer.py for the API).

    config.py        TrainConfig, stage presets, --set overrides
    schedule.py      WSD learning rate, batch-size warm-up
    losses.py        next-token CE with token / square / sample weighting
    build.py         the model a run starts from; freeze / LoRA / parallelize it
    trainer.py       Trainer / train() -> TrainResult, guards, logging, MFU
    state.py         a training state as tensors and JSON (model, optimizer, RNG)
    checkpointing.py atomic, verified checkpoints of that state, and resuming
    parallelize.py   activation checkpointing, compile, FSDP2 (from outside the model)
    lora.py          freezing and LoRA
The data stream is opens1/data/stream.py; `opens1 train` (and the torchrun entry
`python -m opens1.cli.train`) is opens1/cli/train.py.
"""
