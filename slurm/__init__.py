"""SLURM: a Ray cluster on SLURM (cluster.py), submitit launches of experiments and sweeps (launch.py)."""
