"""Test helpers: `cli` (experiment.py / train.py as a user runs them), `slurm` (the local cluster),
`browser` (headless chromium), `comet` (offline archives read back), `fewshot` (the study's small
models and settings), `benchmarks` (small copies of SALICON, MIT1003 and CAT2000),
`ddp_equivalence` (a script test_distributed runs per rank)."""
