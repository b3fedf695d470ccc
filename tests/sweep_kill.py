"""``babymerge sweep`` with a crash, started by the tests with the real launcher
(``torchrun --nproc_per_node 2 tests/sweep_kill.py --kill-rank 1 sweep ...``): that rank
SIGKILLs itself in the middle of its first cell (its claim taken, the cell scored, not yet
recorded), as a crashed node would; the other arguments are ``babymerge``'s."""

import os
import signal
import sys

import babymerge.sweep.runner as runner
from babymerge.cli import main

if __name__ == "__main__":
    assert sys.argv[1] == "--kill-rank"
    kill_rank, argv = int(sys.argv[2]), sys.argv[3:]
    if int(os.environ.get("RANK", 0)) == kill_rank:
        evaluate_cell = runner.evaluate_cell

        def evaluate_then_die(*args, **kwargs):
            evaluate_cell(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        runner.evaluate_cell = evaluate_then_die
    sys.exit(main(argv))
