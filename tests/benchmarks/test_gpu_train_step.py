"""The GPU benchmark's own logic, on CPU: its grouped-dispatch check and its BENCHMARKS.md update."""

from __future__ import annotations

import pytest
import torch
from benchmarks.gpu_train_step import MARK_BEGIN, MARK_END, grouped_check, update_benchmarks_md

from moepot.models.moe import grouped_dispatch_available


@pytest.mark.skipif(not grouped_dispatch_available(), reason="this torch has no grouped_mm")
def test_grouped_check_agrees_on_cpu():
    """The check (a bf16-autocast step through both dispatches) must report the same routing,
    differences at bfloat16's rounding (eps 2^-8 = 0.004), and exact zeros for the idle experts."""
    torch.manual_seed(0)
    check = grouped_check(dim=32, batch=2, grid=4, device="cpu")
    assert check["same_routing"]
    assert check["out_rel_diff"] < 1e-2 and check["expert_grad_rel_diff"] < 1e-2
    assert check["unchosen_experts"] >= 16 - 2 * 4  # 2 samples choose at most 8 of 16 experts
    assert check["unchosen_grads_exactly_zero"]


def test_update_replaces_only_the_marked_block(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Head\n\ntext\n\n{MARK_BEGIN}\nold table\n{MARK_END}\n\n## Next\n")
    update_benchmarks_md(path, "| new | table |")
    assert path.read_text() == f"# Head\n\ntext\n\n{MARK_BEGIN}\n| new | table |\n{MARK_END}\n\n## Next\n"
    bare = tmp_path / "bare.md"
    bare.write_text("# Head\n")
    update_benchmarks_md(bare, "t")
    assert bare.read_text() == f"# Head\n\n{MARK_BEGIN}\nt\n{MARK_END}\n"
