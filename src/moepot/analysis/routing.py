"""Router interpretability: what the MoE routers decide, per dataset.

The MoE-POT paper claims that the dataset a sample comes from can be read off the router's
decisions. This module records those decisions and tests the claim:

1. :func:`collect_routing` runs a model over labelled samples and keeps, for every sample and
   every MoE layer, the top-k expert indices and their softmax weights (from each layer's
   ``last_topk_indices`` / ``last_topk_weights`` after the forward), giving a
   :class:`RoutingRecord`.
2. :func:`routing_vectors` scatters the k weights of each layer onto all experts, one flat
   vector per sample (``[N, L * E]``); :func:`selection_vectors` keeps only which experts were
   chosen (0/1, the same shape).
3. :func:`usage_matrix` and :func:`usage_entropy` summarise how each dataset uses the experts.
4. :func:`classify` cross-validates a simple classifier (nearest centroid or a small
   multinomial logistic regression, both written here; scikit-learn is not a dependency) that
   predicts the dataset from the routing vector, and reports accuracy, confusion matrix and the
   chance level it should be compared with. :func:`analyze_routing` runs it twice: on the
   selections (the claim is about *which* experts are chosen) and on the weighted vectors (which
   also see the weights: datasets that choose the same experts can still differ there);
   :func:`routing_verdict` phrases the result from the selections-only accuracy.

Everything except :func:`collect_routing` is pure numpy on the record.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from moepot.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

N_EXPERTS = 16  # routed experts per MoE layer in MoE-POT (architecture.md)

ClassifierName = Literal["centroid", "logistic"]


@dataclass(frozen=True)
class RoutingRecord:
    """The routing decisions of a model on labelled samples.

    Attributes:
        names: dataset names; label ``i`` means ``names[i]``.
        labels: ``[N]`` int64, dataset label of each sample.
        indices: ``[N, L, k]`` int64, the top-k experts each layer chose for each sample.
        weights: ``[N, L, k]`` float32, their softmax weights (each ``[n, l, :]`` sums to 1).
        n_experts: number of routed experts per layer (``E``).
    """

    names: tuple[str, ...]
    labels: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_experts: int = N_EXPERTS

    def __post_init__(self) -> None:
        labels, indices, weights = self.labels, self.indices, self.weights
        if labels.ndim != 1 or indices.ndim != 3 or weights.shape != indices.shape:
            raise DataError(
                "routing record: expected labels [N], indices [N, L, k] and weights of the same "
                f"shape; got labels {labels.shape}, indices {indices.shape}, weights {weights.shape}"
            )
        if len(labels) != len(indices):
            raise DataError(f"routing record: {len(labels)} labels for {len(indices)} samples")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.names)):
            raise DataError(
                f"routing record: labels must lie in [0, {len(self.names)}) (one per dataset name "
                f"{list(self.names)}); got range [{labels.min()}, {labels.max()}]"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_experts):
            raise DataError(
                f"routing record: expert indices must lie in [0, {self.n_experts}); "
                f"got range [{indices.min()}, {indices.max()}]"
            )

    @property
    def n_samples(self) -> int:
        return len(self.labels)

    @property
    def n_layers(self) -> int:
        return self.indices.shape[1]

    @property
    def top_k(self) -> int:
        return self.indices.shape[2]


# --------------------------------------------------------------------------- recording


def _batch_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, X, Y, T, C], dataset_index [B])`` of a collated batch.

    Accepts a ``Sample`` (or any object with ``x`` and ``dataset_index``), a dict with those
    keys, or a tuple ``(x, ..., dataset_index)``.
    """
    if hasattr(batch, "x") and hasattr(batch, "dataset_index"):
        return batch.x, torch.as_tensor(batch.dataset_index)
    if isinstance(batch, dict) and "x" in batch and "dataset_index" in batch:
        return batch["x"], torch.as_tensor(batch["dataset_index"])
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], torch.as_tensor(batch[-1])
    raise DataError(
        "collect_routing: each batch must be a Sample / dict with 'x' and 'dataset_index', or a "
        f"tuple (x, ..., dataset_index); got {type(batch).__name__}"
    )


@torch.no_grad()
def collect_routing(
    model: torch.nn.Module,
    data: Iterable,
    *,
    names: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RoutingRecord:
    """Run ``model`` (in eval mode, at the inference temperature 0.5 as ``evaluate_model`` does;
    its own temperature restored after) over ``data`` and record every MoE layer's top-k choice.

    Args:
        model: a model with ``moe_layers()`` (docs/interfaces.md); dense models are rejected.
        data: a ``torch.utils.data.Dataset`` whose items are ``Sample(x, y, mask, dataset_index)``
            (``x: [X, Y, T_in, C]``; batched here with ``batch_size``), or any other iterable of
            collated batches (e.g. a ``DataLoader``; ``x: [B, X, Y, T_in, C]``).
        names: dataset names indexed by ``dataset_index``; default ``data.names`` (as
            ``MixtureDataset`` has), else ``dataset_0, dataset_1, ...``.
        batch_size: batch size when ``data`` is a dataset.
        device: where to run; default the device of the model's parameters.
        progress: show a progress bar.

    Returns:
        The :class:`RoutingRecord` of all samples, in the order they were seen.
    """
    layers = list(model.moe_layers()) if hasattr(model, "moe_layers") else []
    if not layers:
        raise ConfigError(
            f"collect_routing: model {type(model).__name__} has no MoE layers; router analysis "
            "needs a MoE-POT model (a dense DPOT/FNO has no routing decisions)"
        )
    if names is None:
        names = getattr(data, "names", None)
    if isinstance(data, torch.utils.data.Dataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    if device is None:
        device = next(model.parameters()).device

    was_training = model.training
    model.eval()
    # the inference temperature 0.5, as evaluate_model (a model fresh from training has not
    # reached it: its weights would be softer than the ones its evaluation used); restored after
    inference_temperature = getattr(model, "inference_temperature", contextlib.nullcontext)
    labels, indices, weights = [], [], []
    try:
        with inference_temperature():
            for batch in tqdm(data, desc="routing", unit="batch", disable=not progress, leave=False):
                x, dataset_index = _batch_inputs(batch)
                model(x.to(device))
                labels.append(dataset_index.reshape(-1).cpu().long())
                indices.append(torch.stack([layer.last_topk_indices.cpu() for layer in layers], dim=1))
                weights.append(torch.stack([layer.last_topk_weights.cpu() for layer in layers], dim=1))
    finally:
        model.train(was_training)
    if not labels:
        raise DataError("collect_routing: the data gave no samples")

    label_array = torch.cat(labels).numpy()
    if names is None:
        names = [f"dataset_{i}" for i in range(int(label_array.max()) + 1)]
    return RoutingRecord(
        names=tuple(names),
        labels=label_array,
        indices=torch.cat(indices).long().numpy(),
        weights=torch.cat(weights).float().numpy(),
        n_experts=_n_experts(layers[0]),
    )


def _n_experts(layer: torch.nn.Module) -> int:
    """Number of routed experts of a MoE layer (``len(layer.experts)`` if it has them)."""
    experts = getattr(layer, "experts", None)
    return len(experts) if experts is not None else N_EXPERTS


def concat_records(records: Sequence[RoutingRecord], names: Sequence[str]) -> RoutingRecord:
    """One record from per-dataset records: record ``i`` gets label ``i`` and name ``names[i]``."""
    if len(records) != len(names) or not records:
        raise ConfigError(f"concat_records: {len(records)} records for {len(names)} names")
    return RoutingRecord(
        names=tuple(names),
        labels=np.concatenate([np.full(r.n_samples, i, dtype=np.int64) for i, r in enumerate(records)]),
        indices=np.concatenate([r.indices for r in records]),
        weights=np.concatenate([r.weights for r in records]),
        n_experts=records[0].n_experts,
    )


def collect_test_routing(
    model: torch.nn.Module,
    names: Sequence[str],
    *,
    res: int | None = None,
    n_samples: int | None = None,
    catalog: Any = None,
    data_root: str | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> RoutingRecord:
    """Routing decisions on the test split of each catalogue dataset in ``names`` (label = position).

    The samples are the first ``n_samples`` test trajectories of each dataset (all when None),
    read at ``res`` (default the model's ``img_size``; resized bilinearly to the model's grid when
    it differs, as in evaluation) and padded to the model's channels; the model sees their first
    ``in_timesteps`` frames.
    """
    from moepot.data.catalog import load_catalog
    from moepot.data.mixture import MixtureDataset
    from moepot.eval.evaluate import model_grid, resize_grid

    config = getattr(model, "config", None)
    grid = model_grid(model)
    res = res or (grid[0] if grid else None)  # as in evaluation: read at res, resized to the model's grid
    if res is None:
        raise ConfigError("collect_test_routing: give res (the model's config has no img_size)")
    if catalog is None or isinstance(catalog, (str, os.PathLike)):
        catalog = load_catalog(catalog, data_root)
    # every dataset opened (ids, files, shapes checked from their headers) before the model runs
    # on the first: a problem with the last one is reported at once, not after the others ran
    datasets = [
        MixtureDataset(
            [name],
            split="test",
            res=res,
            t_in=getattr(config, "in_timesteps", 10),
            catalog=catalog,
            data_root=data_root,
            n_channels=getattr(config, "in_channels", None),
            n_samples=None if n_samples is None else min(n_samples, catalog[name].test_size),
        )
        for name in names
    ]
    records = []
    for name, dataset in zip(names, datasets, strict=True):
        batches = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        if grid is not None and grid != (res, res):
            batches = ((resize_grid(batch.x, grid), batch.dataset_index) for batch in batches)
        records.append(
            collect_routing(model, batches, names=[name], device=device, progress=progress)
        )
    return concat_records(records, names)


# --------------------------------------------------------------------------- summaries


def routing_vectors(record: RoutingRecord) -> np.ndarray:
    """Routing vector of each sample: ``[N, L * E]`` float32.

    Entry ``[n, l * E + e]`` is the weight layer ``l`` gave expert ``e`` for sample ``n``
    (0 where ``e`` is not in the top-k), so each layer's block of ``E`` sums to 1.
    """
    n, n_layers, _ = record.indices.shape
    dense = np.zeros((n, n_layers, record.n_experts), dtype=np.float32)
    np.put_along_axis(dense, record.indices, record.weights.astype(np.float32), axis=2)
    return dense.reshape(n, n_layers * record.n_experts)


def selection_vectors(record: RoutingRecord) -> np.ndarray:
    """Which experts each sample chose: ``[N, L * E]`` float32.

    Entry ``[n, l * E + e]`` is 1 when expert ``e`` is in layer ``l``'s top-k for sample ``n``,
    else 0 (each layer's block sums to k): :func:`routing_vectors` without the weights.
    """
    n, n_layers, _ = record.indices.shape
    selected = np.zeros((n, n_layers, record.n_experts), dtype=np.float32)
    np.put_along_axis(selected, record.indices, 1.0, axis=2)
    return selected.reshape(n, n_layers * record.n_experts)


def usage_matrix(record: RoutingRecord) -> tuple[np.ndarray, np.ndarray]:
    """How each dataset uses each expert, per layer.

    Returns:
        ``(frequency, mean_weight)``, both ``[L, D, E]`` with ``D = len(record.names)``:
        ``frequency[l, d, e]`` is the fraction of dataset ``d``'s samples whose top-k in layer
        ``l`` includes expert ``e`` (rows sum to k); ``mean_weight[l, d, e]`` is the mean weight
        layer ``l`` gives expert ``e`` over dataset ``d``'s samples, counting 0 when it is not
        selected (rows sum to 1). Datasets without samples give rows of NaN.
    """
    n_layers, n_datasets, n_experts = record.n_layers, len(record.names), record.n_experts
    dense = routing_vectors(record).reshape(-1, n_layers, n_experts)
    selected = selection_vectors(record).reshape(-1, n_layers, n_experts)
    frequency = np.full((n_layers, n_datasets, n_experts), np.nan)
    mean_weight = np.full((n_layers, n_datasets, n_experts), np.nan)
    for d in range(n_datasets):
        rows = record.labels == d
        if rows.any():
            frequency[:, d] = selected[rows].mean(axis=0)
            mean_weight[:, d] = dense[rows].mean(axis=0)
    return frequency, mean_weight


def usage_entropy(record: RoutingRecord) -> np.ndarray:
    """Entropy (bits) of the expert-usage distribution of each layer: ``[L]``.

    The distribution is the share of all top-k selections (over every sample) that went to
    each expert. Uniform use of ``E`` experts gives ``log2(E)`` (4 bits for 16); a layer that
    always picks the same k experts gives ``log2(k)`` (2 bits for top-4).
    """
    counts = np.stack(
        [np.bincount(record.indices[:, layer].ravel(), minlength=record.n_experts)
            for layer in range(record.n_layers)]
    ).astype(np.float64)
    share = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(share > 0, -share * np.log2(share), 0.0)
    return terms.sum(axis=1)


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class ClassificationResult:
    """Cross-validated dataset classification from routing vectors.

    Attributes:
        method: ``"centroid"`` or ``"logistic"``.
        folds: number of cross-validation folds.
        accuracy: fraction of samples whose held-out prediction is right.
        chance: accuracy of always guessing the most frequent dataset (the baseline).
        confusion: ``[D, D]`` counts, row = true dataset, column = predicted.
        fold_accuracy: accuracy of each fold.
    """

    method: str
    folds: int
    accuracy: float
    chance: float
    confusion: np.ndarray
    fold_accuracy: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "folds": self.folds,
            "accuracy": self.accuracy,
            "chance": self.chance,
            "confusion": self.confusion.tolist(),
            "fold_accuracy": list(self.fold_accuracy),
            "above_chance": self.above_chance,
        }

    @property
    def above_chance(self) -> bool:
        """Whether the accuracy exceeds chance by more than two binomial standard deviations
        (of an accuracy at the chance level measured on the ``confusion.sum()`` samples)."""
        n = int(self.confusion.sum())
        return self.accuracy > self.chance + 2 * math.sqrt(self.chance * (1 - self.chance) / max(n, 1))


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold id ``[N]`` of each sample: every class is shuffled and dealt round-robin to the folds.

    So each fold holds ``floor`` or ``ceil`` of ``count_c / folds`` samples of class ``c``, and
    the fold sizes differ by at most the number of classes.
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    offset = 0  # continue the deal across classes so small classes do not all land in fold 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold_of[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)
    return fold_of


def _nearest_centroid(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Predict the class whose training mean is nearest (Euclidean) to each test vector.

    Exact ties (e.g. all vectors identical) go to the most frequent training class, so a
    classifier that learns nothing scores the chance level rather than an arbitrary class's.
    """
    classes, counts = np.unique(train_y, return_counts=True)
    centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in classes])  # [K, F]
    dist = ((test_x[:, None, :] - centroids[None]) ** 2).sum(axis=-1)  # [M, K]
    tied = dist <= dist.min(axis=1, keepdims=True) + 1e-12
    return classes[np.argmax(np.where(tied, counts[None], -1), axis=1)]


def _logistic(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float = 1e-2
) -> np.ndarray:
    """Multinomial logistic regression with an L2 penalty, fitted by L-BFGS.

    Features are standardised with the training fold's mean and std (constant features are left
    at 0); the loss is the mean cross-entropy plus ``l2 * |W|^2`` (the bias is not penalised).
    """
    classes = np.unique(train_y)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    x = torch.as_tensor((train_x - mean) / std, dtype=torch.float64)
    y = torch.as_tensor(np.searchsorted(classes, train_y))
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    test = torch.as_tensor((test_x - mean) / std, dtype=torch.float64)
    with torch.no_grad():
        return classes[(test @ weight + bias).argmax(dim=1).numpy()]


_CLASSIFIERS = {"centroid": _nearest_centroid, "logistic": _logistic}


def classify(
    vectors: np.ndarray,
    labels: np.ndarray,
    folds: int = 5,
    method: ClassifierName = "centroid",
    *,
    n_classes: int | None = None,
    seed: int = 0,
) -> ClassificationResult:
    """Cross-validated accuracy of predicting ``labels`` from ``vectors``.

    Args:
        vectors: ``[N, F]`` features (routing vectors from :func:`routing_vectors`).
        labels: ``[N]`` integer classes in ``[0, n_classes)``.
        folds: number of stratified folds (each sample is predicted once, by a classifier fitted
            on the other folds).
        method: ``"centroid"`` (nearest class mean) or ``"logistic"`` (multinomial logistic
            regression).
        n_classes: size of the confusion matrix; default ``labels.max() + 1``.
        seed: seed of the fold assignment.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if method not in _CLASSIFIERS:
        raise ConfigError(f"classify: unknown method {method!r}; expected one of {sorted(_CLASSIFIERS)}")
    if vectors.ndim != 2 or labels.shape != (len(vectors),):
        raise DataError(f"classify: expected vectors [N, F] and labels [N]; got {vectors.shape} and {labels.shape}")
    if folds < 2 or len(labels) < folds:
        raise ConfigError(f"classify: folds must be in [2, N={len(labels)}]; got {folds}")
    present, counts = np.unique(labels, return_counts=True)
    if len(present) < 2:
        raise DataError(f"classify: need samples of at least 2 classes; got only class {present.tolist()}")
    if counts.min() < 2:
        # its one sample's fold would be the only one holding the class: the classifier fitted on
        # the other folds has never seen it and cannot predict it, a guaranteed miss
        raise DataError(
            f"classify: every class needs at least 2 samples for cross-validation; class(es) "
            f"{present[counts < 2].tolist()} have 1"
        )
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes

    fold_of = stratified_folds(labels, folds, seed)
    predicted = np.empty_like(labels)
    fold_accuracy = []
    for fold in range(folds):
        test = fold_of == fold
        predicted[test] = _CLASSIFIERS[method](vectors[~test], labels[~test], vectors[test])
        fold_accuracy.append(float((predicted[test] == labels[test]).mean()))

    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return ClassificationResult(
        method=method,
        folds=folds,
        accuracy=float((predicted == labels).mean()),
        chance=float(counts.max() / len(labels)),
        confusion=confusion,
        fold_accuracy=tuple(fold_accuracy),
    )


# --------------------------------------------------------------------------- everything at once


@dataclass(frozen=True)
class RoutingAnalysis:
    """All router statistics of one record (see the functions above for each field)."""

    names: tuple[str, ...]
    n_samples: tuple[int, ...]  # per dataset
    frequency: np.ndarray  # [L, D, E]
    mean_weight: np.ndarray  # [L, D, E]
    entropy: np.ndarray  # [L] bits
    classification: ClassificationResult | None  # on the weighted routing vectors; None when skipped
    classification_skipped: str | None = None  # why there is no classification, if there is none
    selection_classification: ClassificationResult | None = None  # on the 0/1 selections only

    @property
    def verdict(self) -> str | None:
        """The classification in words (:func:`routing_verdict`); None when it was skipped."""
        return routing_verdict(self.selection_classification, self.classification)

    def to_dict(self) -> dict:
        """JSON-able summary (NaN rows of empty datasets become null)."""

        def clean(a: np.ndarray) -> list:
            return np.where(np.isnan(a), None, np.round(a, 6)).tolist()

        return {
            "datasets": list(self.names),
            "n_samples": list(self.n_samples),
            "usage_entropy_bits": [round(float(h), 6) for h in self.entropy],
            "max_entropy_bits": float(np.log2(self.frequency.shape[2])),
            "frequency": clean(self.frequency),
            "mean_weight": clean(self.mean_weight),
            "classification": None if self.classification is None else self.classification.to_dict(),
            "selection_classification": (
                None if self.selection_classification is None else self.selection_classification.to_dict()
            ),
            "verdict": self.verdict,
            "classification_skipped": self.classification_skipped,
        }


def analyze_routing(
    record: RoutingRecord, *, folds: int = 5, method: ClassifierName = "centroid", seed: int = 0
) -> RoutingAnalysis:
    """Usage matrices, entropies and the cross-validated dataset classifier of ``record``.

    The classifier runs twice with the same folds: on :func:`routing_vectors` (``classification``,
    weights included) and on :func:`selection_vectors` (``selection_classification``, which experts
    were chosen, the basis of :func:`routing_verdict`). It is skipped (both None, the reason in
    ``classification_skipped`` and logged) when fewer than two datasets have samples, or when a dataset has a single sample
    (cross-validation would hold its class out of every training fold); ``folds`` is lowered to
    the number of samples when there are fewer.
    """
    frequency, mean_weight = usage_matrix(record)
    n_per_dataset = tuple(int((record.labels == d).sum()) for d in range(len(record.names)))
    classification, selection_classification, skipped = None, None, None
    singles = [name for name, n in zip(record.names, n_per_dataset) if n == 1]
    if sum(n > 0 for n in n_per_dataset) < 2:
        skipped = "it needs samples of at least two datasets"
    elif singles:
        skipped = (
            f"every dataset needs at least 2 samples for cross-validation; {', '.join(singles)} "
            f"{'has' if len(singles) == 1 else 'have'} 1"
        )
    else:
        classification, selection_classification = (
            classify(
                vectors,
                record.labels,
                folds=min(folds, record.n_samples),
                method=method,
                n_classes=len(record.names),
                seed=seed,
            )
            for vectors in (routing_vectors(record), selection_vectors(record))
        )
    if skipped:
        logger.info("router classification skipped: %s", skipped)
    return RoutingAnalysis(
        names=record.names,
        n_samples=n_per_dataset,
        frequency=frequency,
        mean_weight=mean_weight,
        entropy=usage_entropy(record),
        classification=classification,
        classification_skipped=skipped,
        selection_classification=selection_classification,
    )


def routing_verdict(
    selections: ClassificationResult | None, weighted: ClassificationResult | None = None
) -> str | None:
    """What the classifiers say about the router, in words (None without a selections result).

    The verdict follows the selections-only accuracy, since the claim is about which experts are
    chosen; when only the weighted classifier beats chance, it says that the datasets differ in the
    routing weights alone.
    """
    if selections is None:
        return None
    if selections.above_chance:
        return "the dataset can be read off which experts the router chooses"
    if weighted is not None and weighted.above_chance:
        return ("the chosen experts do not reveal the dataset (selections-only accuracy at chance); "
                "only the routing weights differ between the datasets")
    return "no better than chance: the routing does not reveal the dataset"

