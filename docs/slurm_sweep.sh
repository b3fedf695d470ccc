#!/bin/bash
# One `babymerge sweep` spread over a Slurm job array: each array task takes its share of the
# (checkpoint, alpha) cells into the same --out (babymerge reads SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_COUNT), then one collating job, started when every task has ended
# (afterany: also after a failed or killed task), runs the same command: it computes any cell a
# killed task left undone, and writes results.csv and the plots of the whole grid.
#
#   bash docs/slurm_sweep.sh      # (on the login node) submits the array, then the collating job
#
# Edit the settings below. --out must be on a file system every node sees, with working flock
# (NFSv4, Lustre mounted with -o flock, BeeGFS, GPFS).
#SBATCH --job-name=babymerge-sweep
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

SWEEP=(babymerge sweep --mm runs/mm --lang runs/lang --checkpoints words --alphas 0:1:0.1
       --tasks babylm2025_fast --out sweeps/words --no-progress)

if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then  # run by hand: submit the array, then the collating job
    array=$(sbatch --parsable "$0")
    sbatch --dependency=afterany:"$array" --job-name=babymerge-collate --gres=gpu:1 \
        --wrap="$(printf '%q ' "${SWEEP[@]}")"
    exit 0
fi
# one array task: its share of the cells (use `torchrun --nproc_per_node G -m babymerge sweep ...`
# instead, with --gres=gpu:G, to split the share over G GPUs)
"${SWEEP[@]}"
