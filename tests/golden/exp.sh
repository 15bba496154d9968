#!/bin/bash
#SBATCH --job-name=demo-003
#SBATCH --output=/scratch/runs/demo/run_003/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --partition=gpu
#SBATCH --account=lab
#SBATCH --requeue
#SBATCH --signal=B:USR2@120

set -eo pipefail
module load cuda/12.1
module load python/3.11
eval "$(conda shell.bash hook)"
conda activate sal
export OMP_NUM_THREADS=8

echo "hypersal: job ${SLURM_JOB_ID:-local} on $(hostname) at $(date -Is), restart ${SLURM_RESTART_COUNT:-0}"
cd /scratch/runs/demo/run_003
# exec: train.py replaces this shell, so the signal Slurm sends before the time limit
# (--signal=B:...) reaches it and it can checkpoint and requeue.
exec /usr/bin/python3 /code/train.py --config /scratch/runs/demo/run_003/config.yaml
