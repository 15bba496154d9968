#!/bin/bash
{#- hypersal's general sbatch template.

Every {{ value }} is shell-quoted by hypersal, whatever it holds; lists render as several
quoted words. Values come from `sbatch:` in the experiment file (experiment level, then run
level); `job` is set by hypersal:
  job.name     job name (<experiment>-<run index>)     job.dir    the run folder
  job.output   Slurm output file                       job.array  array spec, or none
  job.python   the Python that ran experiment.py       job.args   train.py and its arguments
Copy this file to write your own; an sbatch value the template does not use is an error.
-#}
{%- set cpus = cpus | default(4) -%}
{%- set mem = mem | default("16G") -%}
{%- set gpus = gpus | default(0) -%}
{%- set time = time | default("") -%}
{%- set partition = partition | default("") -%}
{%- set account = account | default("") -%}
{%- set qos = qos | default("") -%}
{%- set requeue = requeue | default(true) -%}
{%- set signal = signal | default("B:USR2@120") -%}
{%- set modules = modules | default([]) -%}
{%- set conda_env = conda_env | default("") -%}
{%- set venv = venv | default("") -%}
{%- set env = env | default({}) -%}
{%- set python = python | default(job.python) %}

#SBATCH --job-name={{ job.name }}
#SBATCH --output={{ job.output }}
#SBATCH --open-mode=append
#SBATCH --cpus-per-task={{ cpus }}
#SBATCH --mem={{ mem }}
{% if gpus %}
#SBATCH --gres=gpu:{{ gpus }}
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
# exec: train.py replaces this shell, so the signal Slurm sends before the time limit
# (--signal=B:...) reaches it and it can checkpoint and requeue.
exec {{ python }} {{ job.args }}
