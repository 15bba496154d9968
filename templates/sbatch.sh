#!/bin/bash
{#- hypersal's general sbatch template.

Every {{ value }} is shell-quoted by hypersal, whatever it holds; lists render as several
quoted words. Values come from `sbatch:` in the experiment file (experiment level, then run
level); `job` is set by hypersal:
  job.name     job name (<experiment>-<run index>)     job.dir    the run folder
  job.output   Slurm output file                       job.array  array spec, or none
  job.python   the Python that ran experiment.py       job.args   train.py and its arguments
Copy this file to write your own; an sbatch value the template does not use is an error.

`gpus` is per node (`gpu_type` names a kind, e.g. a100: --gres=gpu:a100:N).
One run over several GPUs and nodes: `nodes` and `gpus` (per node) give one task per GPU
(`tasks_per_node` to choose otherwise); srun starts them and train.py joins them with
PyTorch DDP. `cpus` and `mem` are per task and per node.
-#}
{%- set cpus = cpus | default(4) -%}
{%- set mem = mem | default("16G") -%}
{%- set gpus = gpus | default(0) -%}
{%- set gpu_type = gpu_type | default("") -%}
{%- set nodes = nodes | default(1) -%}
{%- set tasks_per_node = tasks_per_node | default(gpus if gpus else 1) -%}
{%- set tasks = nodes * tasks_per_node -%}
{%- set time = time | default("") -%}
{%- set partition = partition | default("") -%}
{%- set account = account | default("") -%}
{%- set qos = qos | default("") -%}
{%- set requeue = requeue | default(true) -%}
{#- The warning before the time limit goes to train.py: to the batch shell, which exec's it,
    for one task; to the srun tasks (no "B:") for several. Not USR1: NCCL uses it. -#}
{%- set signal = signal | default("B:USR2@120" if tasks == 1 else "USR2@120") -%}
{%- set modules = modules | default([]) -%}
{%- set conda_env = conda_env | default("") -%}
{%- set venv = venv | default("") -%}
{%- set env = env | default({}) -%}
{%- set python = python | default(job.python) %}

#SBATCH --job-name={{ job.name }}
#SBATCH --output={{ job.output }}
#SBATCH --open-mode=append
{% if tasks > 1 %}
#SBATCH --nodes={{ nodes }}
#SBATCH --ntasks-per-node={{ tasks_per_node }}
{% endif %}
#SBATCH --cpus-per-task={{ cpus }}
#SBATCH --mem={{ mem }}
{% if gpus %}
#SBATCH --gres=gpu:{% if gpu_type %}{{ gpu_type }}:{% endif %}{{ gpus }}
{% endif %}
{% if time %}
#SBATCH --time={{ time }}
{% endif %}
{% if partition %}
#SBATCH --partition={{ partition }}
{% endif %}
{% if account %}
#SBATCH --account={{ account }}
{% endif %}
{% if qos %}
#SBATCH --qos={{ qos }}
{% endif %}
{% if job.array %}
#SBATCH --array={{ job.array }}
{% endif %}
{% if requeue %}
#SBATCH --requeue
{% endif %}
{% if signal %}
#SBATCH --signal={{ signal }}
{% endif %}

set -eo pipefail
{% for module in modules %}
module load {{ module }}
{% endfor %}
{% if conda_env %}
eval "$(conda shell.bash hook)"
conda activate {{ conda_env }}
{% endif %}
{% if venv %}
source {{ venv }}/bin/activate
{% endif %}
{% for name, value in env.items() %}
export {{ name }}={{ value }}
{% endfor %}

echo "hypersal: job ${SLURM_JOB_ID:-local} on $(hostname) at $(date -Is), restart ${SLURM_RESTART_COUNT:-0}"
cd {{ job.dir }}
{% if tasks > 1 %}
# One process per task: each reads its rank from SLURM_PROCID and joins the others (DDP);
# if one fails, srun ends them all.
exec srun --kill-on-bad-exit=1 --cpus-per-task={{ cpus }} {{ python }} {{ job.args }}
{% else %}
# exec: train.py replaces this shell, so the signal Slurm sends before the time limit
# (--signal=B:...) reaches it and it can checkpoint and requeue.
exec {{ python }} {{ job.args }}
{% endif %}
