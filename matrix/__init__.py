"""matrix-harness: a peer-to-peer multi-agent runtime for synthetic data generation on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("matrix-harness")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
