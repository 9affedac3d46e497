"""SLURM: a Ray cluster on SLURM (cluster.py); the checks a SLURM multirun passes before submitting (preflight.py)."""
