"""moepot: MoE-POT, DPOT and FNO neural-operator foundation models for mixtures of PDE datasets."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_pretrained", "save_pretrained"]


def __getattr__(name: str):
    # Lazy re-exports keep `import moepot` (and the CLI's start-up) light.
    if name in ("build_model", "load_pretrained", "save_pretrained"):
        from moepot.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'moepot' has no attribute {name!r}")
