"""Evaluation: the benchmark-exact saliency metrics (metrics), bootstrap intervals (stats) and the
pictures of predictions (viz). `hypersal.metrics` stays importable as before."""
