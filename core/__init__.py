"""drirl: safety alignment of language models with DR-IRL, its baselines and a benchmark harness."""

from drirl.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "hookspec"]
