"""The faithful baseline systems the P2P runtime is measured against (Coral controller, Ray Data batch, Tau2 threads)."""
