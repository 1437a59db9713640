"""The tiny training run most training tests start from."""

from __future__ import annotations

from moepot.train.config import TrainConfig

TINY_RUN = dict(width=16, n_layers=1, n_blocks=2, patch_size=4, res=16, modes=3, out_layer_dim=8, T_in=4,
                batch_size=4, n_test=2, lr_method="cycle", use_writer=False)  # fmt: skip


def tiny_config(data_root, **overrides) -> TrainConfig:
    """:data:`TINY_RUN` on the decay mixture of ``tiny_data.write_decay_mixture`` at ``data_root``
    (the ``data_root`` fixture of ``conftest.py``), with ``overrides``."""
    values = {**TINY_RUN, "train_paths": ["decay_a", "decay_b"], "data_root": str(data_root), **overrides}
    return TrainConfig.from_dict(values)
