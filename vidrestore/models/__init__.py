"""Model registry, weights store and loading (``vidrestore.models.loading``, which imports torch)."""

from vidrestore.models.registry import DEFAULT_REGISTRY, ModelRegistry, ModelSpec
from vidrestore.models.store import ModelStore, default_weights_dir

__all__ = ["DEFAULT_REGISTRY", "ModelRegistry", "ModelSpec", "ModelStore", "default_weights_dir"]
