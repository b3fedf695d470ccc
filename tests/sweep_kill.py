"""``babymerge sweep`` with a crash, started by the tests with the real launcher
(``torchrun --nproc_per_node 2 tests/sweep_kill.py --kill-rank 1 --marker FILE sweep ...``):
that rank writes FILE when it starts its first cell and SIGKILLs itself in the middle of it
(its claim taken, the cell scored, not yet recorded), as a crashed node would. The other ranks
start sweeping only once FILE exists, so the crash always comes mid-cell, whatever the start-up
order. The remaining arguments are ``babymerge``'s."""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import babymerge.sweep.runner as runner
from babymerge.cli import main

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--kill-rank", type=int, required=True)
    p.add_argument("--marker", type=Path, required=True)
    args, argv = p.parse_known_args()
    if int(os.environ.get("RANK", 0)) == args.kill_rank:
        evaluate_cell = runner.evaluate_cell

        def evaluate_then_die(*a, **kw):
            args.marker.write_text(str(os.getpid()))
            evaluate_cell(*a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

        runner.evaluate_cell = evaluate_then_die
    else:
        deadline = time.monotonic() + 600
        while not args.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    sys.exit(main(argv))
