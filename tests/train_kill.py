"""``python -m train`` with a fault, started by the tests with the real launcher
(``deepspeed --num_gpus 2 tests/train_kill.py --kill-at 1:12 --config ...``):

* ``--kill-at RANK:STEP``: that rank SIGKILLs itself right after optimiser step STEP (and its
  checkpoints), as a crashed node would;
* ``--stall-at RANK:STEP --marker FILE``: that rank writes its pid to FILE right after step
  STEP and waits (the other ranks wait for it in the next collective) until FILE is removed,
  so a test can act on a run at a known point: kill its launcher, start a second run.
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from train.loop import main

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kill-at", metavar="RANK:STEP")
    p.add_argument("--stall-at", metavar="RANK:STEP")
    p.add_argument("--marker", type=Path)
    args, rest = p.parse_known_args()
    me = int(os.environ.get("RANK", 0))

    def at(spec: str | None, done: int) -> bool:
        return spec is not None and tuple(int(x) for x in spec.split(":")) == (me, done)

    def fault(done: int) -> None:
        if at(args.kill_at, done):
            os.kill(os.getpid(), signal.SIGKILL)
        if at(args.stall_at, done):
            args.marker.write_text(str(os.getpid()))
            while args.marker.exists():
                time.sleep(0.1)

    sys.exit(main(rest, on_step_end=fault))
