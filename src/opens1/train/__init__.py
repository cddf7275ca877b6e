"""Training: continued pretraining, multimodal pretraining and SFT (see trainer.py for the API).

    config.py        TrainConfig, stage presets, --set overrides
    schedule.py      WSD learning rate, batch-size warm-up
    losses.py        next-token CE with token / square / sample weighting
    data.py          sources -> documents -> packed stream
    trainer.py       Trainer / train() -> TrainResult, guards, logging, MFU
    checkpointing.py atomic safetensors checkpoints (model, optimizer, RNG, data position)
    parallelize.py   activation checkpointing, compile, FSDP2 (from outside the model)
    lora.py          freezing and LoRA
    cli.py           `opens1 train`; `python -m opens1.train` / torchrun entry
"""
