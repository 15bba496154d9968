"""hypersal: hypernetwork saliency models, trained in sweeps on Slurm clusters."""
__version__ = "0.1.0"
