"""`hypersal.metrics`, as documented: the metrics live in hypersal/evaluation/metrics.py."""
from hypersal.evaluation.metrics import *  # noqa: F401,F403
from hypersal.evaluation.metrics import METRICS  # noqa: F401
