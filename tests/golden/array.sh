#!/bin/bash
#SBATCH --job-name=demo
#SBATCH --output=/scratch/runs/demo/run_%3a/slurm-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --array=0-9%4
#SBATCH --requeue
#SBATCH --signal=B:USR2@120

set -eo pipefail

echo "hypersal: job ${SLURM_JOB_ID:-local} on $(hostname) at $(date -Is), restart ${SLURM_RESTART_COUNT:-0}"
cd /scratch/runs/demo
# exec: train.py replaces this shell, so the signal Slurm sends before the time limit
# (--signal=B:...) reaches it and it can checkpoint and requeue.
exec /usr/bin/python3 /code/train.py --sweep /scratch/runs/demo
