"""MoE-POT, DPOT and FNO models.

Public entry points (``moepot.build_model`` / ``moepot.load_pretrained`` / ``moepot.save_pretrained`` re-export the first three):

- :func:`moepot.models.registry.build_model`, :func:`~moepot.models.registry.load_pretrained`,
  :func:`~moepot.models.registry.save_pretrained`, presets in ``registry.PRESETS``;
- :class:`moepot.models.config.ModelConfig`, :class:`moepot.models.base.ModelOutput`;
- :class:`moepot.models.moe.MoELayer` (``model.moe_layers()``).

Modules: ``config`` (the dataclass), ``base`` (output + MoE controls), ``layers`` (patch
embedding, time aggregation, AFNO), ``moe``, ``patch_operator`` (the DPOT/MoE-POT trunk),
``dpot``, ``moepot``, ``fno``, ``checkpoints`` (safe reading, architecture inference),
``registry``, ``cli`` (``moepot info``). Nothing is imported here, so the CLI starts fast.
"""
