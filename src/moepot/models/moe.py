"""The MoE-POT mixture-of-experts channel mixer with image-level (per-sample) routing.

One routing decision per sample (for the whole latent field): a feature extractor, a router
(1x1 convs, BatchNorm, channel attention) that scores ``num_experts`` routed experts, top-k of
them weighted by softmax(top-k scores / temperature), plus ``num_shared_experts`` experts that
every sample uses. Every expert is a 1x1 convolution followed by GELU.

Dispatch (``expert_dispatch``):

- ``sparse`` (default): the B*k (sample, expert) assignments are sorted by expert; each chosen
  expert runs once, on exactly its gathered samples (the per-token pattern of DeepSeek-V3 and
  Mixtral, here per sample); the outputs are gathered back per sample and weighted-summed.
- ``grouped``: the same sorting, gathering and weighted sum, but all chosen experts run as one
  grouped matmul (``torch.nn.functional.grouped_mm`` over the experts' stacked weights, the
  pattern of torchtitan's MoE). Every shape is static (B*k*P rows whatever the routing), so
  there is no host synchronisation and ``torch.compile`` captures the layer in its graph (in
  bfloat16: torch's compile-time shape function of ``grouped_mm`` accepts no other dtype, so in
  float32 that one call runs eagerly); on CUDA the fast kernel wants bfloat16 (autocast) on
  Hopper-class GPUs. Needs a torch with ``grouped_mm`` and widths that are multiples of 8 (its
  16-byte alignment).
- ``dense``: the original's way, every expert on every sample, multiplied by a weight that is
  zero for the unchosen ones. Kept as a reference for tests and benchmarks.

All three give the same outputs and gradients to float rounding. Experts that no sample chose
get an exactly zero gradient in all: the sparse path adds ``0 * sum(their parameters)`` to the
output and the grouped one multiplies their (empty) groups, so under DDP
(``find_unused_parameters=False``) every parameter takes part in every backward even when a rank
routes no sample to some expert.

State-dict keys are the original's: ``feature_extractor.conv.0``, ``gating.gate.{0..7}``,
``shared_experts.{i}.conv.0``, ``experts.{e}.conv.0``; ``temperature`` (a buffer) is ours.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from moepot.errors import ConfigError

TEMPERATURE_START = 2.0
TEMPERATURE_DECAY = 0.99
TEMPERATURE_FLOOR = 0.5  # also the inference / fine-tuning temperature


def eager_under_compile(fn: Callable) -> Callable:
    """``torch.compiler.disable(fn)`` (run ``fn`` eagerly inside compiled models), built on the
    first call: ``torch.compiler.disable`` imports ``torch._dynamo``, ~1.4 s that ``import moepot``
    and ``moepot info`` should not pay."""
    disabled: Callable | None = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


def grouped_dispatch_available() -> bool:
    """Whether this torch has the ``grouped_mm`` that ``expert_dispatch="grouped"`` runs on."""
    return hasattr(F, "grouped_mm")


def _check_grouped_dispatch(dim: int, hidden: int) -> None:
    """Raise a :class:`ConfigError` if ``expert_dispatch="grouped"`` cannot run here."""
    if not grouped_dispatch_available():
        raise ConfigError(
            f"expert_dispatch='grouped' needs torch.nn.functional.grouped_mm, which torch "
            f"{torch.__version__} does not have; use expert_dispatch='sparse'"
        )
    if dim % 8 or hidden % 8:
        raise ConfigError(
            f"expert_dispatch='grouped' needs the latent width ({dim}) and the expert input width "
            f"Hm ({hidden}) to be multiples of 8 (grouped_mm's 16-byte alignment); use 'sparse'"
        )


@eager_under_compile
def _grouped_mm_eager(*args, **kwargs) -> torch.Tensor:
    """``F.grouped_mm``, run eagerly under ``torch.compile``."""
    return F.grouped_mm(*args, **kwargs)


class ConvExpert(nn.Module):
    """1x1 conv + GELU, applied to channels-last tokens: [N, P, C_in] -> [N, P, C_out].

    Keeps the original's ``conv.0`` parameters (a Conv2d, for checkpoint compatibility); on
    channels-last input the 1x1 convolution is one ``linear`` (a single matmul over all N * P
    grid cells), which is 2-4x faster on CPU than ``conv2d`` on [N, C, X', Y'].
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel_size=1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv[0]
        return F.gelu(F.linear(x, conv.weight.flatten(1), conv.bias))


class ChannelAttention(nn.Module):
    """Squeeze-excitation style gate: z * sigmoid(fc(avgpool z) + fc(maxpool z)).

    The router applies it to a 1x1 map, where both pools equal z.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, kernel_size=1),
            nn.GELU(),
            nn.Conv2d(channels // reduction, channels, kernel_size=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [B, C, X, Y] -> [B, C, X, Y]."""
        if z.shape[2:] == (1, 1):  # the router's case: both pools are z itself
            score = _pointwise(self.fc, z)
            return z * torch.sigmoid(score + score)
        avg = _pointwise(self.fc, z.mean(dim=(2, 3), keepdim=True))
        peak = _pointwise(self.fc, z.amax(dim=(2, 3), keepdim=True))
        return z * torch.sigmoid(avg + peak)


def _pointwise(layers: nn.Sequential, z: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` to a [B, C, 1, 1] map, its 1x1 convolutions as ``linear`` on [B, C].

    Same result as ``layers(z)``; ``conv2d`` on 1x1 maps takes CPU's slow im2col path.
    """
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            z = F.linear(z.flatten(1), layer.weight.flatten(1), layer.bias)[:, :, None, None]
        else:
            z = layer(z)
    return z


class Router(nn.Module):
    """Scores of the routed experts from the pooled features.

    ``gate``: conv(Hm->2Hm), BN, GELU, channel attention, conv(2Hm->Hm), BN, GELU,
    conv(Hm->E). The BatchNorms couple the samples of a training batch. A training batch of
    a single sample cannot use batch statistics (the variance of one value is undefined), so
    for B = 1 the router uses the running statistics (and does not update them) even in
    training mode.
    """

    def __init__(self, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv2d(hidden, 2 * hidden, kernel_size=1),
            nn.BatchNorm2d(2 * hidden),
            nn.GELU(),
            ChannelAttention(2 * hidden),
            nn.Conv2d(2 * hidden, hidden, kernel_size=1),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, num_experts, kernel_size=1),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: [B, Hm, 1, 1] -> scores [B, E]."""
        if self.training and pooled.shape[0] == 1:
            with _running_batchnorm(self.gate):
                return _pointwise(self.gate, pooled).flatten(1)
        return _pointwise(self.gate, pooled).flatten(1)


@contextlib.contextmanager
def _running_batchnorm(module: nn.Module) -> Iterator[None]:
    """Put the BatchNorms of ``module`` in eval mode for the duration of the block."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


def balance_loss(topk_indices: torch.Tensor, topk_weights: torch.Tensor, num_experts: int) -> torch.Tensor:
    """The original's load-balancing loss: mean_e (importance_e - ideal)^2.

    importance_e is the sum over the batch of the weights given to expert e; ideal is the sum
    of all weights divided by the number of experts.

    Args:
        topk_indices: [B, k] chosen experts; topk_weights: [B, k] their weights.
    Returns:
        scalar tensor.
    """
    importance = topk_weights.new_zeros(num_experts).index_add(
        0, topk_indices.flatten(), topk_weights.flatten()
    )
    ideal = topk_weights.sum() / num_experts
    return ((importance - ideal) ** 2).mean()


class MoELayer(nn.Module):
    """Image-level mixture of experts: [B, D, X', Y'] -> ([B, D, X', Y'], balance loss).

    After each forward ``last_topk_indices`` [B, k] (long) and ``last_topk_weights`` [B, k]
    (detached) hold the routing decision, for the router analysis.

    Args:
        dim: latent width D; hidden: Hm; num_experts: routed experts E; num_shared: shared
        experts; top_k: experts per sample; dispatch: ``sparse`` or ``dense``;
        temperature_decay: ``forward`` or ``step`` (see :meth:`step_temperature`).
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int = 16,
        num_shared: int = 2,
        top_k: int = 4,
        dispatch: str = "sparse",
        temperature_decay: str = "forward",
    ) -> None:
        super().__init__()
        if dispatch == "grouped":
            _check_grouped_dispatch(dim, hidden)
        self.num_experts = num_experts
        self.top_k = top_k
        self.dispatch = dispatch
        self.temperature_decay = temperature_decay
        self.finetune = False
        self.feature_extractor = ConvExpert(dim, hidden)
        self.gating = Router(hidden, num_experts)
        self.shared_experts = nn.ModuleList(ConvExpert(hidden, dim) for _ in range(num_shared))
        self.experts = nn.ModuleList(ConvExpert(hidden, dim) for _ in range(num_experts))
        self.register_buffer("temperature", torch.tensor(TEMPERATURE_START))
        self.last_topk_indices: torch.Tensor | None = None
        self.last_topk_weights: torch.Tensor | None = None

    # ------------------------------------------------------------------ modes
    def set_finetune(self, enabled: bool = True) -> None:
        """Freeze (or release) the feature extractor and the router.

        Frozen, they get no gradient and stay in eval mode under ``model.train()`` (the router's
        BatchNorm statistics stay fixed); the temperature is set to 0.5 and never decays, and
        there is no balance loss.
        """
        self.finetune = enabled
        for module in (self.feature_extractor, self.gating):
            module.requires_grad_(not enabled)
        if enabled:
            self.temperature.fill_(TEMPERATURE_FLOOR)
        self.train(self.training)

    def train(self, mode: bool = True) -> MoELayer:
        super().train(mode)
        if self.finetune:
            self.feature_extractor.eval()
            self.gating.eval()
        return self

    @torch.no_grad()
    def step_temperature(self) -> None:
        """Decay the temperature once (x0.99, floor 0.5); used with ``temperature_decay="step"``."""
        if not self.finetune:
            self.temperature.mul_(TEMPERATURE_DECAY).clamp_(min=TEMPERATURE_FLOOR)

    # ------------------------------------------------------------------ forward
    @eager_under_compile
    def _take_temperature_and_decay(self) -> torch.Tensor:
        """A copy of the temperature this forward routes with; then the per-forward decay.

        Runs outside ``torch.compile``'s graphs: a compiled graph that both reads the buffer and
        decays it in place may keep the buffer itself (not the copy) for its backward, which the
        decay then invalidates (an autograd version error). Forwards that do not decay read the
        buffer inside the graph.
        """
        temperature = self.temperature.clone()
        self.step_temperature()
        return temperature

    def route(self, features: torch.Tensor, temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features: [B, P, Hm] (channels last) -> (indices [B, k] long, weights [B, k])."""
        scores = self.gating(features.mean(dim=1)[:, :, None, None])  # [B, E]
        top_scores, indices = scores.topk(self.top_k, dim=1)
        weights = torch.softmax(top_scores / temperature, dim=1)
        return indices, weights

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h: [B, D, X', Y'] -> (out [B, D, X', Y'], balance loss scalar).

        Internally channels last ([B, P = X' Y', C]), so every expert is a single matmul. The
        output is a channels-last view ([B, X', Y', D] in memory); a channels-last ``h``
        (what the MoE-POT trunk passes) costs no layout copy either.
        """
        b, d, nx, ny = h.shape
        tokens = h.permute(0, 2, 3, 1).reshape(b, nx * ny, d)
        features = self.feature_extractor(tokens)  # [B, P, Hm]
        learning_router = self.training and not self.finetune
        if learning_router and self.temperature_decay == "forward":
            temperature = self._take_temperature_and_decay()
        else:  # a copy: a later step_temperature() must not touch what the backward needs
            temperature = self.temperature.clone()
        indices, weights = self.route(features, temperature)
        self.last_topk_indices = indices.detach()
        self.last_topk_weights = weights.detach()

        out = self._shared(features)  # [B, P, D] or None
        if self.dispatch == "dense":
            out = self._dense(features, indices, weights, out)
        elif self.dispatch == "grouped":
            out = self._grouped(features, indices, weights, out)
        else:
            out = self._sparse(features, indices, weights, out)
        out = out.reshape(b, nx, ny, -1).permute(0, 3, 1, 2)  # [B, D, X', Y'], channels-last memory

        if learning_router:
            aux = balance_loss(indices, weights, self.num_experts)
        else:
            aux = h.new_zeros(())
        return out, aux

    def _shared(self, features: torch.Tensor) -> torch.Tensor | None:
        """Mean of the shared experts, all of them in one matmul: [B, P, Hm] -> [B, P, D].

        The experts' weights are concatenated at forward time ([n D, Hm], cheap next to the
        matmul), so the parameters (and state-dict keys) stay per expert.
        """
        n = len(self.shared_experts)
        if n == 0:
            return None
        if n == 1:
            return self.shared_experts[0](features)
        convs = [expert.conv[0] for expert in self.shared_experts]
        weight = torch.cat([conv.weight.flatten(1) for conv in convs])  # [n D, Hm]
        bias = torch.cat([conv.bias for conv in convs])
        outputs = F.gelu(F.linear(features, weight, bias))  # [B, P, n D]
        return outputs.unflatten(-1, (n, -1)).mean(dim=-2)

    def _gather_by_expert(
        self, features: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The B*k (sample, choice) slots sorted by expert, and their features in that order.

        features: [B, P, Hm]; indices: [B, k] -> (order [B k]: sorted position -> slot, with
        slot j = sample j // k, choice j % k; experts [B k]: the expert of each sorted position,
        ascending; rows [B k P, Hm]: each sorted slot's sample features, one gather).
        """
        flat_experts = indices.flatten()
        order = torch.argsort(flat_experts, stable=True)
        samples = torch.div(order, self.top_k, rounding_mode="floor")
        rows = features.index_select(0, samples).reshape(-1, features.shape[-1])
        return order, flat_experts.index_select(0, order), rows

    def _combine(
        self, pre: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None
    ) -> torch.Tensor:
        """GELU of the routed pre-activations, weighted-summed per sample, plus ``out``.

        pre: [B k, P, D] in sorted order; weights: [B, k]; out: [B, P, D] or None -> [B, P, D].
        The results go back to (sample, choice) order with one gather, and one batched matmul
        per sample, ``weights[b] @ routed[b]`` ([1, k] @ [k, P*D]), weights and sums the
        sample's k experts and adds ``out``. (Weighting, then ``index_add``, does the same with
        two more passes; every sample's sum stays its own either way, so a non-finite sample
        cannot spill into the others.)
        """
        b = weights.shape[0]
        p = pre.shape[1]
        slot_position = torch.argsort(order)  # slot -> sorted position
        routed = F.gelu(pre).reshape(len(order), -1).index_select(0, slot_position)  # [B k, P D], by slot
        routed = routed.reshape(b, self.top_k, -1)
        mixed = weights.to(routed.dtype).unsqueeze(1)  # [B, 1, k]
        if out is None:
            out = torch.bmm(mixed, routed)
        else:
            out = torch.baddbmm(out.reshape(b, 1, -1), mixed, routed)
        return out.reshape(b, p, -1)  # [B, P, D]

    @eager_under_compile
    def _sparse(
        self, features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None
    ) -> torch.Tensor:
        """Run each chosen expert once, on exactly its samples; add the result to ``out``.

        features: [B, P, Hm]; indices, weights: [B, k]; out: [B, P, D] (the shared experts'
        mean) or None. The features are gathered once in expert order
        (:meth:`_gather_by_expert`); each chosen expert is one ``addmm`` on its contiguous run of
        slots; :meth:`_combine` does the rest.

        Runs eagerly under ``torch.compile``: the expert counts are data, and compiling for
        each routing pattern would recompile at almost every step.
        """
        p = features.shape[1]
        order, experts, rows = self._gather_by_expert(features, indices)
        counts = torch.bincount(experts, minlength=self.num_experts).tolist()
        runs = rows.split([c * p for c in counts])
        chosen = [e for e, count in enumerate(counts) if count]
        pre = torch.cat(
            [
                torch.addmm(
                    self.experts[e].conv[0].bias, runs[e], self.experts[e].conv[0].weight.flatten(1).t()
                )
                for e in chosen
            ]
        )  # [B k P, D], sorted by expert
        out = self._combine(pre.reshape(len(order), p, -1), order, weights, out)

        if len(chosen) < self.num_experts and torch.is_grad_enabled():
            # zero-valued and exact: keeps every expert in the autograd graph, so DDP's reducer
            # sees a (zero) gradient for experts that no sample on this rank chose
            unused = [
                q.reshape(-1)[0]
                for e, count in enumerate(counts)
                if count == 0
                for q in self.experts[e].parameters()
            ]
            out = out + 0.0 * torch.stack(unused).sum()
        return out

    def _grouped(
        self, features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None
    ) -> torch.Tensor:
        """The sparse computation as one grouped matmul, with static shapes.

        features: [B, P, Hm]; indices, weights: [B, k]; out: [B, P, D] or None -> [B, P, D].
        The experts' weights are stacked at forward time ([E, D, Hm], as the shared experts'
        are concatenated: the parameters and state-dict keys stay per expert); the group sizes
        are counted on the device (a scatter-add, not ``bincount``, whose length depends on the
        data), so nothing waits for the host and every shape is known to the compiler. An
        expert without samples is an empty group: its weight gradient is exactly zero.
        """
        p = features.shape[1]
        order, experts, rows = self._gather_by_expert(features, indices)  # rows [B k P, Hm]
        convs = [expert.conv[0] for expert in self.experts]
        weight = torch.stack([conv.weight.flatten(1) for conv in convs]).to(rows.dtype)  # [E, D, Hm]
        bias = torch.stack([conv.bias for conv in convs]).to(rows.dtype)  # [E, D]
        counts = torch.zeros(self.num_experts, dtype=torch.int32, device=rows.device)
        counts = counts.scatter_add(0, experts, torch.ones_like(experts, dtype=torch.int32))
        offsets = torch.cumsum(counts * p, dim=0, dtype=torch.int32)  # end row of each expert's group
        # torch's compile-time shape function of grouped_mm accepts bfloat16 only: other dtypes
        # run it eagerly (a graph break) under torch.compile
        matmul = F.grouped_mm if rows.dtype == torch.bfloat16 else _grouped_mm_eager
        pre = matmul(rows, weight.transpose(1, 2), offs=offsets)  # [B k P, D]
        pre = pre.reshape(len(order), p, -1) + bias.index_select(0, experts).unsqueeze(1)
        return self._combine(pre, order, weights, out)

    def _dense(
        self, features: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None
    ) -> torch.Tensor:
        """The original's way: every expert on every sample, unchosen ones weighted by 0.

        features: [B, P, Hm]; out: [B, P, D] (the shared experts' mean) or None -> [B, P, D].
        """
        gate = weights.new_zeros(features.shape[0], self.num_experts).scatter(1, indices, weights)  # [B, E]
        routed = 0
        for e, expert in enumerate(self.experts):
            routed = routed + expert(features) * gate[:, e, None, None]
        return routed if out is None else out + routed
