#!/bin/bash
#SBATCH --job-name=demo-003
#SBATCH --output=/scratch/runs/big/run_003/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --mem=200G
#SBATCH --gres=gpu:4
#SBATCH --requeue
#SBATCH --signal=USR2@120

set -eo pipefail

echo "hypersal: job ${SLURM_JOB_ID:-local} on $(hostname) at $(date -Is), restart ${SLURM_RESTART_COUNT:-0}"
cd /scratch/runs/big/run_003
# One process per task: each reads its rank from SLURM_PROCID and joins the others (DDP);
# if one fails, srun ends them all.
exec srun --kill-on-bad-exit=1 --cpus-per-task=8 /usr/bin/python3 /code/train.py --config /scratch/runs/big/run_003/config.yaml
