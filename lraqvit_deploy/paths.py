"""Where lraqvit-deploy keeps derived files (converted weights, fitted heads, features)."""
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$LRAQVIT_CACHE` or `~/.cache/lraqvit_deploy`, created on demand."""
    root = Path(os.environ.get("LRAQVIT_CACHE") or Path.home() / ".cache" / "lraqvit_deploy")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
