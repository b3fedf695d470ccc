"""``python -m train`` with a fault: ``--kill-at RANK:STEP`` makes that rank SIGKILL itself
right after optimiser step STEP (and its checkpoints), as a crashed node would. The tests
start it with the real launcher: ``deepspeed --num_gpus 2 tests/train_kill.py --kill-at 1:12 --config ...``.
"""

import argparse
import os
import signal
import sys

from train.loop import main

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", required=True, metavar="RANK:STEP")
    args, rest = p.parse_known_args()
    rank, step = (int(x) for x in args.kill_at.split(":"))

    def kill(done: int) -> None:
        if done == step and int(os.environ.get("RANK", 0)) == rank:
            os.kill(os.getpid(), signal.SIGKILL)

    sys.exit(main(rest, on_step_end=kill))
