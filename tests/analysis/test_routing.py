"""Router analysis on synthetic routing records whose answer is known by construction."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from moepot.analysis.routing import (
    RoutingRecord,
    analyze_routing,
    classify,
    collect_routing,
    concat_records,
    routing_vectors,
    routing_verdict,
    selection_vectors,
    stratified_folds,
    usage_entropy,
    usage_matrix,
)
from moepot.errors import ConfigError, DataError

E, K = 16, 4


def random_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Softmax-like weights: positive, summing to 1 over the last axis, in decreasing order."""
    w = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]).astype(np.float32)
    return -np.sort(-w, axis=-1)


def random_topk(rng: np.random.Generator, n: int, n_layers: int) -> np.ndarray:
    """[n, L, K] distinct experts per (sample, layer), drawn uniformly."""
    return np.argsort(rng.random((n, n_layers, E)), axis=-1)[..., :K]


def separable_record(n_per_class: int = 20, n_classes: int = 4, n_layers: int = 3, seed: int = 0):
    """Dataset d always routes to experts 4d..4d+3 (in a random order, with random weights)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    base = (K * labels)[:, None, None] + np.zeros((1, n_layers, K), dtype=np.int64)
    order = np.argsort(rng.random((len(labels), n_layers, K)), axis=-1)
    indices = base + order
    return RoutingRecord(
        names=tuple(f"d{i}" for i in range(n_classes)),
        labels=labels,
        indices=indices,
        weights=random_weights(rng, indices.shape),
    )


def random_record(n: int, n_classes: int, n_layers: int = 2, seed: int = 0) -> RoutingRecord:
    """Labels independent of the routing: nothing to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    return RoutingRecord(
        names=tuple(f"d{i}" for i in range(n_classes)),
        labels=labels,
        indices=random_topk(rng, n, n_layers),
        weights=random_weights(rng, (n, n_layers, K)),
    )


def chance_tolerance(n: int, p: float) -> float:
    """Four binomial standard deviations of an accuracy measured on n samples."""
    return 4 * math.sqrt(p * (1 - p) / n)


# ----------------------------------------------------------------------------- vectors and summaries


def test_routing_vectors_round_trip_to_topk():
    record = random_record(30, 3, n_layers=2, seed=1)
    vectors = routing_vectors(record).reshape(30, 2, E)
    np.testing.assert_allclose(vectors.sum(-1), 1.0, rtol=1e-6)
    top = np.argsort(-vectors, axis=-1, kind="stable")[..., :K]
    np.testing.assert_array_equal(np.sort(top, -1), np.sort(record.indices, -1))
    np.testing.assert_allclose(np.take_along_axis(vectors, record.indices, -1), record.weights)


def test_usage_matrix_matches_explicit_loops():
    record = random_record(25, 3, n_layers=2, seed=2)
    frequency, mean_weight = usage_matrix(record)
    for layer in range(2):
        for d in range(3):
            members = np.flatnonzero(record.labels == d)
            for e in range(E):
                chosen = [n for n in members if e in record.indices[n, layer]]
                assert frequency[layer, d, e] == pytest.approx(len(chosen) / len(members))
                total = sum(
                    float(record.weights[n, layer][list(record.indices[n, layer]).index(e)]) for n in chosen
                )
                assert mean_weight[layer, d, e] == pytest.approx(total / len(members), rel=1e-5)
    np.testing.assert_allclose(frequency.sum(-1), K)
    np.testing.assert_allclose(mean_weight.sum(-1), 1.0, rtol=1e-5)


def test_usage_matrix_marks_a_dataset_without_samples_as_nan():
    record = random_record(10, 2, seed=3)
    record = RoutingRecord(("a", "b", "empty"), record.labels, record.indices, record.weights)
    frequency, mean_weight = usage_matrix(record)
    assert np.isnan(frequency[:, 2]).all() and np.isnan(mean_weight[:, 2]).all()
    assert not np.isnan(frequency[:, :2]).any()


def test_usage_entropy_analytic_extremes():
    n = 64
    # Layer 0: the same 4 experts for everyone -> log2(4); layer 1: each expert chosen equally
    # often (sample n uses 4(n%4)..4(n%4)+3) -> log2(16).
    indices = np.zeros((n, 2, K), dtype=np.int64)
    indices[:, 0] = np.arange(K)
    indices[:, 1] = K * (np.arange(n) % 4)[:, None] + np.arange(K)
    record = RoutingRecord(("a",), np.zeros(n, dtype=np.int64), indices, np.full((n, 2, K), 0.25, np.float32))
    np.testing.assert_allclose(usage_entropy(record), [2.0, 4.0])


def test_stratified_folds_balance_every_class():
    labels = np.array([0] * 23 + [1] * 7 + [2] * 11)
    fold_of = stratified_folds(labels, 5, seed=4)
    for c, count in [(0, 23), (1, 7), (2, 11)]:
        per_fold = np.bincount(fold_of[labels == c], minlength=5)
        assert per_fold.sum() == count
        assert per_fold.max() - per_fold.min() <= 1


# ----------------------------------------------------------------------------- the classifier


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_classifier_recovers_separable_datasets(method):
    record = separable_record(n_per_class=15, n_classes=4)
    result = classify(routing_vectors(record), record.labels, folds=5, method=method)
    assert result.accuracy == 1.0
    np.testing.assert_array_equal(result.confusion, np.diag([15] * 4))
    assert result.chance == pytest.approx(0.25)


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_classifier_recovers_noisy_but_informative_routing(method):
    """Each dataset prefers its own experts 80% of the time: accuracy well above chance."""
    rng = np.random.default_rng(5)
    separable, noise = separable_record(n_per_class=40, n_classes=3, n_layers=2), random_record(120, 3)
    keep = rng.random((120, 2, 1)) < 0.8
    record = RoutingRecord(
        separable.names, separable.labels, np.where(keep, separable.indices, noise.indices), separable.weights
    )
    result = classify(routing_vectors(record), record.labels, folds=5, method=method)
    assert result.accuracy > 0.9


@pytest.mark.parametrize("method", ["centroid", "logistic"])
@pytest.mark.parametrize(("n", "n_classes"), [(300, 3), (400, 4)])
def test_classifier_is_at_chance_on_random_routing(method, n, n_classes):
    record = random_record(n, n_classes, seed=n)
    result = classify(routing_vectors(record), record.labels, folds=5, method=method)
    assert abs(result.accuracy - result.chance) < chance_tolerance(n, result.chance)
    assert result.confusion.sum() == n


def test_classifier_is_exactly_at_chance_on_identical_routing():
    """All routing vectors equal: the classifier falls back to the most frequent class."""
    n = 50
    labels = np.array([0] * 10 + [1] * 30 + [2] * 10)
    indices = np.broadcast_to(np.arange(K), (n, 2, K)).copy()
    record = RoutingRecord(("a", "b", "c"), labels, indices, np.full((n, 2, K), 0.25, np.float32))
    result = classify(routing_vectors(record), labels, folds=5, method="centroid")
    assert result.chance == pytest.approx(0.6)
    assert result.accuracy == pytest.approx(0.6)
    assert (result.confusion[:, 1] == [10, 30, 10]).all()


def test_classifier_rejects_bad_input():
    vectors, labels = np.zeros((10, 4)), np.arange(10) % 2
    with pytest.raises(ConfigError, match="unknown method 'svm'"):
        classify(vectors, labels, method="svm")
    with pytest.raises(ConfigError, match="folds"):
        classify(vectors, labels, folds=11)
    with pytest.raises(DataError, match="at least 2 classes"):
        classify(vectors, np.zeros(10, dtype=int))
    with pytest.raises(DataError, match="labels"):
        classify(vectors, labels[:5])


def test_a_dataset_with_one_sample_is_not_scored_as_a_miss():
    """Perfectly separable routing, but dataset d2 has one sample: whichever fold holds it, the
    classifier fitted on the others has never seen d2, so the "accuracy" would count a sure miss
    against routing that does separate the datasets. classify refuses; analyze_routing says why."""
    full = separable_record(n_per_class=10, n_classes=3, n_layers=2)
    keep = np.flatnonzero(full.labels != 2)[:20].tolist() + [int(np.flatnonzero(full.labels == 2)[0])]
    record = RoutingRecord(full.names, full.labels[keep], full.indices[keep], full.weights[keep])
    with pytest.raises(DataError, match=r"at least 2 samples.*\[2\] have 1"):
        classify(routing_vectors(record), record.labels, folds=5)
    analysis = analyze_routing(record, folds=5)
    assert analysis.classification is None
    assert "d2 has 1" in analysis.classification_skipped
    assert analysis.to_dict()["classification_skipped"] == analysis.classification_skipped
    from moepot.analysis.figures import confusion_figure

    with pytest.raises(DataError, match="no classification .*d2 has 1"):  # the reason, not a guess
        confusion_figure(analysis, Path("never.png"))
    # the two full datasets alone are classified perfectly, as constructed
    two = np.flatnonzero(record.labels != 2)
    assert classify(routing_vectors(record)[two], record.labels[two], folds=5).accuracy == 1.0


def test_record_rejects_out_of_range_labels_and_experts():
    record = random_record(6, 2)
    with pytest.raises(DataError, match="labels must lie in"):
        RoutingRecord(("a",), record.labels, record.indices, record.weights)
    with pytest.raises(DataError, match="expert indices"):
        RoutingRecord(record.names, record.labels, record.indices + E, record.weights)


def test_analyze_routing_summary_and_single_dataset():
    record = separable_record(n_per_class=10, n_classes=2, n_layers=2)
    summary = analyze_routing(record, folds=5).to_dict()
    assert summary["classification"]["accuracy"] == 1.0
    assert summary["n_samples"] == [10, 10]
    assert len(summary["usage_entropy_bits"]) == 2
    # Each dataset's samples use exactly its own 4 experts.
    assert summary["frequency"][0][1] == [0.0] * 4 + [1.0] * 4 + [0.0] * 8

    single = concat_records([record], ["only"])
    assert analyze_routing(single).classification is None


def same_experts_record(n_per_class: int = 20, n_layers: int = 2, disjoint: bool = False, seed: int = 0):
    """Two datasets; every sample of both picks experts 0..3 in every layer (or dataset 1 picks
    4..7 when ``disjoint``), but dataset 0 puts most weight on its first expert and dataset 1
    spreads it evenly, so the weights alone tell them apart."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    indices = np.broadcast_to(np.arange(K), (len(labels), n_layers, K)).copy()
    if disjoint:
        indices[labels == 1] += K
    peaked = np.array([0.7, 0.1, 0.1, 0.1]) + rng.normal(0, 0.01, (n_per_class, n_layers, K))
    flat = np.full(K, 0.25) + rng.normal(0, 0.01, (n_per_class, n_layers, K))
    weights = np.concatenate([peaked, flat]).astype(np.float32)
    return RoutingRecord(("peaked", "flat"), labels, indices, weights / weights.sum(-1, keepdims=True))


def test_selection_vectors_mark_exactly_the_chosen_experts():
    record = random_record(12, 3, n_layers=2, seed=4)
    vectors = selection_vectors(record).reshape(12, 2, E)
    for n in range(12):
        for layer in range(2):
            assert set(np.flatnonzero(vectors[n, layer])) == set(record.indices[n, layer].tolist())
    assert set(np.unique(vectors)) == {0.0, 1.0}


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_same_experts_different_weights_is_separable_by_weights_only(method):
    """Both datasets choose the same 4 experts everywhere: the selections carry no information
    (accuracy = chance = 0.5), the weights separate them; the verdict says so instead of claiming
    the dataset can be read off the router's choices."""
    record = same_experts_record()
    analysis = analyze_routing(record, folds=5, method=method)
    selections, weighted = analysis.selection_classification, analysis.classification
    assert selections.chance == 0.5
    assert selections.accuracy == pytest.approx(0.5, abs=chance_tolerance(40, 0.5))
    assert not selections.above_chance
    assert weighted.accuracy == 1.0 and weighted.above_chance
    assert "do not reveal" in analysis.verdict and "weights" in analysis.verdict
    assert "read off" not in analysis.verdict
    saved = analysis.to_dict()
    assert saved["selection_classification"]["accuracy"] == selections.accuracy
    assert saved["classification"]["accuracy"] == 1.0 and saved["verdict"] == analysis.verdict


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_disjoint_experts_are_separable_by_selections_and_weights(method):
    analysis = analyze_routing(same_experts_record(disjoint=True), folds=5, method=method)
    assert analysis.selection_classification.accuracy == 1.0
    assert analysis.classification.accuracy == 1.0
    assert "read off which experts" in analysis.verdict


def test_routing_verdict_when_neither_classifier_beats_chance():
    """Identical experts and weights everywhere: both classifiers are exactly at chance."""
    n = 30
    labels = np.arange(n) % 2
    indices = np.broadcast_to(np.arange(K), (n, 2, K)).copy()
    record = RoutingRecord(("a", "b"), labels, indices, np.full((n, 2, K), 0.25, np.float32))
    analysis = analyze_routing(record, folds=5)
    assert analysis.classification.accuracy == analysis.selection_classification.accuracy == 0.5
    assert analysis.verdict.startswith("no better than chance")
    assert routing_verdict(None) is None


# ----------------------------------------------------------------------------- recording from a model


class FakeMoELayer(torch.nn.Module):
    """Routes sample b to experts (s, s+1, s+2, s+3) with s = round(mean of its input) mod 13."""

    def __init__(self, shift: int):
        super().__init__()
        self.shift = shift
        self.experts = torch.nn.ModuleList(torch.nn.Identity() for _ in range(E))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = (x.mean(dim=(1, 2, 3, 4)).round().long() + self.shift) % (E - K + 1)
        self.last_topk_indices = start[:, None] + torch.arange(K)
        self.last_topk_weights = torch.tensor([0.4, 0.3, 0.2, 0.1]).expand(len(x), K)
        return x


class FakeMoEModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([FakeMoELayer(0), FakeMoELayer(5)])
        self.scale = torch.nn.Parameter(torch.ones(()))

    def moe_layers(self):
        return list(self.layers)

    def forward(self, x):
        for layer in self.layers:
            layer(x)
        return x * self.scale


class Sample(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    dataset_index: int


class ConstantDataset(torch.utils.data.Dataset):
    """Sample i is a constant field of value i; dataset index = i // 3."""

    names = ["p", "q", "r"]

    def __len__(self):
        return 9

    def __getitem__(self, i):
        x = torch.full((4, 4, 2, 1), float(i))
        return Sample(x, x[..., :1, :], torch.ones(4, 4, 1, 1), i // 3)


def test_collect_routing_records_each_layer_in_sample_order():
    model = FakeMoEModel().train()
    record = collect_routing(model, ConstantDataset(), batch_size=4, progress=False)
    assert model.training  # the caller's mode is restored
    assert record.names == ("p", "q", "r")
    np.testing.assert_array_equal(record.labels, np.arange(9) // 3)
    for i in range(9):
        for layer, shift in enumerate([0, 5]):
            start = (i + shift) % (E - K + 1)
            np.testing.assert_array_equal(record.indices[i, layer], start + np.arange(K))
    np.testing.assert_allclose(record.weights.sum(-1), 1.0, rtol=1e-6)


def test_collect_routing_accepts_a_loader_and_rejects_dense_models():
    loader = torch.utils.data.DataLoader(ConstantDataset(), batch_size=5)
    record = collect_routing(FakeMoEModel(), loader, names=["p", "q", "r"], progress=False)
    assert record.n_samples == 9 and record.n_layers == 2
    with pytest.raises(ConfigError, match="no MoE layers"):
        collect_routing(torch.nn.Linear(2, 2), loader, progress=False)


def test_collect_routing_weighs_at_the_inference_temperature_like_evaluation():
    """A model fresh from training has a temperature above 0.5 (here the starting one): the
    recorded weights are those of a forward at 0.5, as evaluate_model runs it, and the model's
    own temperature is left as it was."""
    import moepot

    torch.manual_seed(0)
    model = moepot.build_model("moepot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                               embed_dim=16, depth=2, n_blocks=2, modes=4, out_layer_dim=8, n_cls=2)  # fmt: skip
    model.eval()
    for layer in model.moe_layers():
        layer.temperature.fill_(2.0)
    x = torch.randn(6, 16, 16, 4, 1)
    record = collect_routing(model, [(x, torch.zeros(6, dtype=torch.long))], names=["a"], progress=False)
    assert all(float(layer.temperature) == 2.0 for layer in model.moe_layers())

    with torch.no_grad():  # the reference: the same forward with the buffers set to 0.5 by hand
        for layer in model.moe_layers():
            layer.temperature.fill_(0.5)
        model(x)
    expected = torch.stack([layer.last_topk_weights for layer in model.moe_layers()], dim=1).numpy()
    np.testing.assert_allclose(record.weights, expected, rtol=1e-6)


def test_collect_test_routing_reads_data_for_a_rectangular_model(tmp_path):
    """A model on a 16 x 8 grid: the samples are read at res X = 16 and resized to (16, 8), as in
    evaluation; routing a model of its own grid needs no --res."""
    from tiny_data import write_decay_dataset

    from moepot import build_model
    from moepot.analysis.routing import collect_test_routing

    write_decay_dataset(tmp_path, "decay_a", n_test=3)
    write_decay_dataset(tmp_path, "decay_b", n_test=3, seed=5)
    model = build_model("moepot", img_size=(16, 8), patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                        embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8).eval()  # fmt: skip
    for res in (None, 16):
        record = collect_test_routing(model, ["decay_a", "decay_b"], res=res, data_root=tmp_path, progress=False)
        assert record.n_samples == 6 and record.n_layers == 1


def test_collect_test_routing_checks_every_dataset_before_the_model_runs(tmp_path):
    """An unknown id after a good one is reported before the model sees any sample (it used to
    surface only after the earlier datasets had been routed)."""
    from tiny_data import write_decay_dataset

    from moepot import build_model
    from moepot.analysis.routing import collect_test_routing

    write_decay_dataset(tmp_path, "decay_a", n_test=3)
    model = build_model("moepot", img_size=16, patch_size=4, in_channels=1, out_channels=1, in_timesteps=4,
                        embed_dim=16, depth=1, n_blocks=2, modes=3, out_layer_dim=8).eval()  # fmt: skip
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with pytest.raises(DataError, match="unknown dataset id 'decay_zz'"):
        collect_test_routing(model, ["decay_a", "decay_zz"], data_root=tmp_path, progress=False)
    assert calls == []


# ----------------------------------------------------------------------------- cross-validation folds


def test_held_out_sample_never_shapes_its_own_centroid():
    """Leave-one-out (4 folds of 4 samples) on 1-D features, class 0 at {0, 3} and class 1 at {1, 2}:
    left out, each sample is nearer the other class's remaining mean (e.g. 0: class-0 mean 3, class-1
    mean 1.5), so the held-out accuracy is exactly 0. A classifier that also saw the held-out sample
    would find both means at 1.5 and score above 0."""
    vectors = np.array([[0.0], [3.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(np.bincount(stratified_folds(labels, 4), minlength=4), [1, 1, 1, 1])
    result = classify(vectors, labels, folds=4, method="centroid")
    assert result.accuracy == 0.0
    np.testing.assert_array_equal(result.confusion, [[0, 2], [2, 0]])


def test_stratified_folds_deal_small_classes_over_every_fold():
    """Six datasets of 2 samples in 5 folds: dealt round-robin as one sequence, the folds hold
    3, 3, 2, 2, 2 samples; none is empty (each class alone would only reach folds 0 and 1)."""
    labels = np.repeat(np.arange(6), 2)
    fold_of = stratified_folds(labels, 5, seed=1)
    assert sorted(np.bincount(fold_of, minlength=5).tolist()) == [2, 2, 2, 3, 3]
    for c in range(6):
        assert len(set(fold_of[labels == c].tolist())) == 2  # a class's 2 samples in 2 folds
    record = separable_record(n_per_class=2, n_classes=4, n_layers=1)
    result = classify(routing_vectors(record), record.labels, folds=5)
    assert all(math.isfinite(a) for a in result.fold_accuracy)


def test_above_chance_means_more_than_two_binomial_standard_deviations():
    """Chance 0.5 on n samples: one standard deviation of an accuracy is sqrt(0.25 / n), i.e. 0.05
    for n = 100 and 0.25 for n = 4 (so 4 of 4 right is exactly 2 sd above chance: not more)."""
    from moepot.analysis.routing import ClassificationResult

    def result(accuracy: float, n: int) -> ClassificationResult:
        confusion = np.array([[n // 2, 0], [0, n - n // 2]])
        return ClassificationResult("centroid", 2, accuracy, 0.5, confusion, (accuracy, accuracy))

    assert not result(0.58, 100).above_chance  # 1.6 sd
    assert result(0.62, 100).above_chance  # 2.4 sd
    assert not result(1.0, 4).above_chance  # exactly 2 sd


def test_concat_records_labels_each_record_by_its_position():
    records = [random_record(n, 2, seed=n) for n in (3, 5, 4)]
    merged = concat_records(records, ["a", "b", "c"])
    assert merged.names == ("a", "b", "c")
    np.testing.assert_array_equal(merged.labels, [0] * 3 + [1] * 5 + [2] * 4)
    np.testing.assert_array_equal(merged.indices[3:8], records[1].indices)
    assert analyze_routing(merged, folds=2).n_samples == (3, 5, 4)


def test_analyze_routing_uses_fewer_folds_when_there_are_fewer_samples():
    """4 samples and folds=5: leave-one-out over the 4 (as documented), not an error."""
    record = separable_record(n_per_class=2, n_classes=2, n_layers=1)
    analysis = analyze_routing(record, folds=5)
    assert analysis.classification.folds == analysis.selection_classification.folds == 4
    assert analysis.selection_classification.accuracy == 1.0
