"""RunLogger: the evaluation line of the training log."""

from __future__ import annotations

import json
import logging
import re

from moepot.train.logger import RunLogger


def test_eval_log_line_does_not_round_an_error_below_one_up_to_one(tmp_path, caplog):
    """0.99995 is printed with enough digits to read back as below 1 (``%.4g`` gave '1'), and the
    numbers in the line are the record's to 4 significant digits."""
    metrics = {"a": {"rel_l2_step": 0.99995, "rel_l2_rollout": 0.000123456}}
    logger = RunLogger(tmp_path, tensorboard=False)
    with caplog.at_level(logging.INFO, logger="moepot.train"):
        logger.log_eval({"step": 7, "epoch": 1, "time": 0.0, "metrics": metrics})
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("eval at step 7"))
    step, rollout = (float(x) for x in re.search(r"a: step (\S+) rollout (\S+)", line).groups())
    assert step < 1 and abs(step - 0.99995) <= 5e-5
    assert abs(rollout - 0.000123456) <= 0.5e-7
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["metrics"] == metrics
