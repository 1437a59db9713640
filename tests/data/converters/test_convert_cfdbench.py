"""`cfdbench` converter: case folders -> [N_seg, 64, 64, 20, 3] split files (raw-formats.md §7.2)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from moepot.data.converters import convert
from moepot.errors import DataError

TRAIN = Path("data/large/cfdbench/ns2d_cdb_train.hdf5")  # the original's outputs (raw-formats.md §1)
TEST = Path("data/large/cfdbench/ns2d_cdb_test.hdf5")
G = 64  # catalogue grid
SEGMENT = 20
# (problem, raw H, raw W, number of cases): 12 cases make round(0.8 n) = 10 differ from int(0.8 n) = 9
PROBLEMS = {"cavity": (64, 64, 12), "cylinder": (16, 20, 11), "tube": (12, 10, 12)}
FRAME_COUNTS = (25, 40, 45, 20, 33)  # not all multiples of 20
CYLINDER = {"radius": 0.21, "x_min": 0.0, "x_max": 1.0, "y_min": 0.0, "y_max": 1.0}


def read(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["data"]
        assert f["data"].dtype == np.float32
        return f["data"][()]


def build_tree(raw, root: Path) -> dict[Path, dict]:
    """Cases spread over prop/bc/geo with unpadded numbers (case9 before case10); returns folder -> facts."""
    facts: dict[Path, dict] = {}
    case_id = 0
    for problem, (height, width, n_cases) in PROBLEMS.items():
        numbers = {"prop": [9, 10, 2, 0], "bc": [1, 3, 4, 7], "geo": [5, 11, 6, 8]}
        placed = 0
        for subset, subset_numbers in numbers.items():
            for number in subset_numbers:
                if placed == n_cases:
                    break
                n_frames = FRAME_COUNTS[case_id % len(FRAME_COUNTS)]
                params = {"density": 1.0, "viscosity": 1e-3, "height": 1.0, "width": 1.0}
                if problem != "cavity":
                    params["vel_in"] = 0.5 + case_id
                if problem == "cylinder":
                    params.update(CYLINDER)
                folder = root / problem / subset / f"case{number}"
                raw.write_cfdbench_case(folder, problem, case_id, n_frames, height, width, params)
                facts[folder] = {"id": case_id, "T": n_frames, "problem": problem, **params}
                case_id += 1
                placed += 1
    # an unused problem must be ignored
    raw.write_cfdbench_case(root / "dam" / "bc" / "case0", "dam", 999, 5, 8, 8, {"velocity": 1.0})
    return facts


def expected_split(root: Path) -> tuple[list[Path], list[Path]]:
    """The original's rule, written out: prop, bc, geo sorted by number; random.seed(0) shuffle; 80/10/10."""
    train, test = [], []
    for problem in ("cavity", "cylinder", "tube"):
        folders = []
        for subset in ("prop", "bc", "geo"):
            folders += sorted((root / problem / subset).iterdir(), key=lambda p: int(p.name[4:]))
        random.seed(0)
        random.shuffle(folders)
        n = len(folders)
        n_train, n_dev = (
            (round(0.8 * n), round(0.1 * n)) if problem == "cavity" else (int(0.8 * n), int(0.1 * n))
        )
        train += folders[:n_train]
        test += folders[n_train + n_dev :]
    return train, test


def source_frame(segment: int, frame: int, n_frames: int) -> int:
    """The raw frame shown at (segment, frame): time is padded by repeating the last frame."""
    return min(segment * SEGMENT + frame, n_frames - 1)


def reference_padded(facts: dict, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Padding of one tube/cylinder frame written out cell by cell: [3, H + 2, W + 1]."""
    height, width = u.shape
    out = np.zeros((3, height + 2, width + 1))
    for i in range(height):
        out[0, i + 1, 0] = facts["vel_in"]
        for j in range(width):
            out[0, i + 1, j + 1] = u[i, j]
            out[1, i + 1, j + 1] = v[i, j]
            inside = False
            if facts["problem"] == "cylinder":
                dx = (facts["x_max"] - facts["x_min"]) / width
                dy = (facts["y_max"] - facts["y_min"]) / height
                x, y = facts["x_min"] + j * dx, facts["y_min"] + i * dy
                inside = (x - 0.5) ** 2 + (y - 0.5) ** 2 <= facts["radius"] ** 2
            out[2, i + 1, j + 1] = 0.0 if inside else 1.0
    return out


def resize_reference(frame: np.ndarray) -> np.ndarray:
    """Bilinear resize with align_corners=True by scipy: [C, h, w] -> [C, G, G]."""
    _, h, w = frame.shape
    rows, cols = np.meshgrid(np.linspace(0, h - 1, G), np.linspace(0, w - 1, G), indexing="ij")
    points = np.stack([rows.ravel(), cols.ravel()], axis=-1)
    return np.stack(
        [RegularGridInterpolator((np.arange(h), np.arange(w)), c)(points).reshape(G, G) for c in frame]
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory, raw):
    base = tmp_path_factory.mktemp("cfdbench")
    root = base / "raw_cfdbench"
    facts = build_tree(raw, root)
    data_root = base / "root"
    paths = convert("cfdbench", root, name="cfdbench", data_root=data_root, progress=False)
    return root, facts, data_root, paths


def segments_of(folders: list[Path], facts: dict) -> list[tuple[Path, int]]:
    return [(folder, s) for folder in folders for s in range(math.ceil(facts[folder]["T"] / SEGMENT))]


def test_outputs_shapes_and_case_order(converted):
    root, facts, data_root, paths = converted
    assert paths == [data_root / TRAIN, data_root / TEST]
    train_cases, test_cases = expected_split(root)
    for path, cases in ((data_root / TRAIN, train_cases), (data_root / TEST, test_cases)):
        data = read(path)
        segments = segments_of(cases, facts)
        assert data.shape == (len(segments), G, G, SEGMENT, 3)
        # v = 1000 case_id + t is constant in space: the centre pixel identifies case and frame
        expected_v = [
            [1000 * facts[folder]["id"] + source_frame(s, f, facts[folder]["T"]) for f in range(SEGMENT)]
            for folder, s in segments
        ]
        np.testing.assert_allclose(data[:, G // 2, G // 2, :, 1], expected_v, atol=1e-2)


def test_cavity_frames_are_unchanged_and_mask_is_one(converted):
    root, facts, data_root, _ = converted
    train_cases, _ = expected_split(root)
    data = read(data_root / TRAIN)
    segments = segments_of(train_cases, facts)
    checked = 0
    for k, (folder, s) in enumerate(segments):
        if facts[folder]["problem"] != "cavity":
            continue
        for f in (0, SEGMENT - 1):
            t = source_frame(s, f, facts[folder]["T"])
            i, j = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
            np.testing.assert_allclose(data[k, :, :, f, 0], 10_000 * t + 100 * i + j, rtol=0, atol=1e-2)
        np.testing.assert_array_equal(data[k, ..., 2], 1.0)
        checked += 1
    assert checked > 0


def test_tube_and_cylinder_match_an_independent_padding_and_resize(converted):
    root, facts, data_root, _ = converted
    _, test_cases = expected_split(root)
    data = read(data_root / TEST)
    segments = segments_of(test_cases, facts)
    seen = set()
    for k, (folder, s) in enumerate(segments):
        problem = facts[folder]["problem"]
        if problem == "cavity" or problem in seen:
            continue
        seen.add(problem)
        u, v = np.load(folder / "u.npy"), np.load(folder / "v.npy")
        for f in (0, 7, SEGMENT - 1):
            t = source_frame(s, f, facts[folder]["T"])
            expected = resize_reference(reference_padded(facts[folder], u[t], v[t]))
            np.testing.assert_allclose(
                np.moveaxis(data[k, :, :, f, :], -1, 0), expected, rtol=1e-6, atol=1e-2
            )
    assert seen == {"cylinder", "tube"}


def test_tube_inlet_column_and_mask_border(converted):
    root, facts, data_root, _ = converted
    train_cases, _ = expected_split(root)
    data = read(data_root / TRAIN)
    height = PROBLEMS["tube"][0] + 2
    source_rows = np.arange(G) * (height - 1) / (G - 1)
    interior = (source_rows >= 1) & (source_rows <= height - 2)  # rows not blended with the wall rows
    for k, (folder, _) in enumerate(segments_of(train_cases, facts)):
        if facts[folder]["problem"] != "tube":
            continue
        u, mask = data[k, ..., 0], data[k, ..., 2]
        np.testing.assert_allclose(u[interior, 0, :], facts[folder]["vel_in"], rtol=1e-6)
        np.testing.assert_array_equal(mask[:, 0, :], 0.0)  # left (inlet) column
        np.testing.assert_array_equal(mask[0], 0.0)  # top and bottom rows
        np.testing.assert_array_equal(mask[-1], 0.0)
        np.testing.assert_allclose(mask[interior, -1, :], 1.0, rtol=1e-6)  # right column: no padding


def test_caps_take_the_first_segments(converted, tmp_path):
    root, _, data_root, _ = converted
    full_train, full_test = read(data_root / TRAIN), read(data_root / TEST)
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path, n_train=3, n_test=2, progress=False)
    np.testing.assert_array_equal(read(tmp_path / TRAIN), full_train[:3])
    np.testing.assert_array_equal(read(tmp_path / TEST), full_test[:2])
    with pytest.raises(DataError, match=r"train cases' holds \d+ sample.*segments"):
        convert("cfdbench", root, name="cfdbench", data_root=tmp_path, n_train=10_000, progress=False)


def test_missing_case_key_names_file_and_key(tmp_path):
    import json

    root = tmp_path / "raw"
    folder = root / "tube" / "bc" / "case0"
    folder.mkdir(parents=True)
    np.save(folder / "u.npy", np.zeros((3, 4, 5)))
    np.save(folder / "v.npy", np.zeros((3, 4, 5)))
    (folder / "case.json").write_text(json.dumps({"density": 1.0}))
    with pytest.raises(DataError, match=r"case0/case\.json: missing key\(s\) \['vel_in'\]"):
        convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "out", n_test=0, progress=False)


def test_mismatched_u_v_shapes(tmp_path):
    folder = tmp_path / "raw" / "cavity" / "prop" / "case1"
    folder.mkdir(parents=True)
    np.save(folder / "u.npy", np.zeros((3, 4, 5)))
    np.save(folder / "v.npy", np.zeros((3, 4, 6)))
    with pytest.raises(DataError, match=r"case1: u\.npy has shape \(3, 4, 5\), v\.npy \(3, 4, 6\)"):
        convert("cfdbench", tmp_path / "raw", name="cfdbench", data_root=tmp_path / "out", progress=False)


def test_folder_without_cases(tmp_path):
    (tmp_path / "raw" / "cavity").mkdir(parents=True)
    with pytest.raises(DataError, match="no case folders"):
        convert("cfdbench", tmp_path / "raw", name="cfdbench", data_root=tmp_path / "out", progress=False)


def test_empty_npy_file_is_named(tmp_path):
    folder = tmp_path / "raw" / "cavity" / "prop" / "case1"
    folder.mkdir(parents=True)
    np.save(folder / "u.npy", np.zeros((3, 4, 5)))
    (folder / "v.npy").write_bytes(b"")  # an interrupted download
    with pytest.raises(DataError, match=r"case1/v\.npy: not a readable \.npy"):
        convert("cfdbench", tmp_path / "raw", name="cfdbench", data_root=tmp_path / "out", progress=False)


@pytest.mark.parametrize("text", ["null", "3", '"vel_in"'])
def test_case_json_that_is_not_an_object(tmp_path, text):
    folder = tmp_path / "raw" / "tube" / "bc" / "case0"
    folder.mkdir(parents=True)
    np.save(folder / "u.npy", np.zeros((3, 4, 5)))
    np.save(folder / "v.npy", np.zeros((3, 4, 5)))
    (folder / "case.json").write_text(text)
    with pytest.raises(DataError, match=r"case0/case\.json: holds a JSON .*expected an object"):
        convert("cfdbench", tmp_path / "raw", name="cfdbench", data_root=tmp_path / "out", progress=False)


def test_replaced_case_files_are_converted_again(raw, tmp_path):
    """Single-file splits from a folder: the origin digests every case file, so new case data
    (same shapes) is not mistaken for the finished earlier conversion."""
    import os
    import shutil

    root = tmp_path / "raw_cfdbench"
    build_tree(raw, root)
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "out", progress=False)
    before = read(tmp_path / "out" / TRAIN)
    for u_file in root.rglob("u.npy"):
        u = np.load(u_file)
        np.save(u_file, u + 1.0)
        os.utime(u_file, ns=(10**18, 10**18))
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "out", progress=False)
    assert not np.array_equal(read(tmp_path / "out" / TRAIN), before)
    shutil.rmtree(root)


def tiny_cavity_tree(raw, root: Path, n_cases: int = 3, size: int = 8, n_frames: int = 25) -> list[Path]:
    """``cavity/prop/case0..``: equal shapes (so equal file sizes), v = 1000 case_id + t tells cases apart."""
    return [
        raw.write_cfdbench_case(root / "cavity" / "prop" / f"case{i}", "cavity", i, n_frames, size, size, {})
        for i in range(n_cases)
    ]


def test_renumbered_case_folder_with_copied_mtimes_is_converted_again(raw, tmp_path):
    """case0 is renumbered case9 in a tree whose files all carry one mtime (a copied or unpacked
    release): every file keeps its size and time, but the cases sort (by number) and so shuffle
    differently, so the rerun must match a fresh conversion of the renamed tree, not keep the old output."""
    import os

    root = tmp_path / "raw_cfdbench"
    first, _, _ = tiny_cavity_tree(raw, root)
    for file in root.rglob("*"):
        if file.is_file():
            os.utime(file, ns=(10**18, 10**18))
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "out", progress=False)
    before = read(tmp_path / "out" / TRAIN)
    first.rename(root / "cavity" / "prop" / "case9")
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "out", progress=False)
    convert("cfdbench", root, name="cfdbench", data_root=tmp_path / "fresh", progress=False)
    fresh = read(tmp_path / "fresh" / TRAIN)
    assert not np.array_equal(fresh, before)  # the renumbering does change the train split
    np.testing.assert_array_equal(read(tmp_path / "out" / TRAIN), fresh)


def test_rerun_into_an_entry_with_another_grid_rewrites_at_that_grid(raw, tmp_path):
    """The same raw folder and split written for a catalogue entry of in_size 16 x 16, then for one of
    8 x 8 at the same paths: the finished 16 x 16 files are not the 8 x 8 conversion. At 8 x 8 the
    8 x 8 cavity frames are kept exactly (align_corners resize of the same size is the identity)."""
    import yaml

    root = tmp_path / "raw_cfdbench"
    tiny_cavity_tree(raw, root)
    entry = {"train_path": "cdb/train.hdf5", "test_path": "cdb/test.hdf5", "train_size": 1, "test_size": 1,
             "scatter": False, "t_test": 10, "t_total": 20, "n_channels": 3, "pred_channels": 2}  # fmt: skip
    catalog = tmp_path / "mine.yaml"
    for size in (16, 8):
        catalog.write_text(yaml.safe_dump({"my_cdb": {**entry, "in_size": [size, size]}}))
        convert("cfdbench", root, name="my_cdb", data_root=tmp_path / "out", catalog_file=catalog, progress=False)
    train = read(tmp_path / "out" / "cdb" / "train.hdf5")
    assert train.shape == (4, 8, 8, SEGMENT, 3)  # round(0.8 * 3) = 2 cases of 25 frames -> 2 segments each
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    np.testing.assert_allclose(train[0, :, :, 0, 0], 100 * i + j, atol=1e-3)  # u[t=0] of the first case
