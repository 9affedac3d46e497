"""The faithful baseline systems the P2P runtime is measured against.

Coral's central controller, the Ray Data batch pipeline, and tau2's threaded runner.
"""
