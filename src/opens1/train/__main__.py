"""Entry script for `opens1 train`, runnable under torchrun.

    # one process, CPU (or one GPU when present)
    python -m opens1.train --preset pretrain --model tiny --steps 50 --out runs/pt

    # 2 processes with FSDP2 (gloo on CPU, NCCL on GPUs); N GPUs: --nproc_per_node=N
    torchrun --standalone --nproc_per_node=2 -m opens1.train --preset pretrain --model tiny --steps 50 --out runs/pt2

See `opens1 train --help` (opens1/train/cli.py) for every option.
"""

import sys

from opens1.cli.util import run_main
from opens1.train.cli import main

sys.exit(run_main(main, None, "opens1 train"))
