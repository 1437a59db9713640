"""Run logging: Python ``logging``, TensorBoard scalars and a JSONL metrics file.

Only rank 0 writes (the others get a disabled logger). ``metrics.jsonl`` holds one JSON object
per evaluation, ``{"step", "epoch", "time", "metrics": {dataset: {"rel_l2_step": ...,
"rel_l2_rollout": ...}}}``; it is rewritten atomically after each evaluation, so a killed run
never leaves half a line, and a resumed run drops the records after the step it resumes from.
TensorBoard is optional (extra ``train``); without it the scalars only go to ``logging``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import yaml

from moepot.eval.metrics import format_error
from moepot.io import atomic_path

log = logging.getLogger("moepot.train")


class RunLogger:
    """Writes the run directory's logs (a no-op unless ``enabled``)."""

    def __init__(self, run_dir: str | os.PathLike, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        self._writer = None
        self._writer_class = None  # imported now (slow: not inside a timed step), the file made at the first value
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                log.info("tensorboard is not installed (pip install 'moepot[train]'); scalars go to the log only")
            else:
                self._writer_class = SummaryWriter

    def _tensorboard_writer(self) -> Any:
        """The TensorBoard writer, created on first use (a run stopped at start leaves no event
        file); None when disabled or tensorboard is not installed."""
        if self._writer is None and self._writer_class is not None:
            self._writer = self._writer_class(log_dir=str(self.run_dir))
        return self._writer

    # ------------------------------------------------------------------ files
    def save_config(self, config: dict[str, Any]) -> Path:
        """Write the resolved config to ``config.yaml`` (atomically)."""
        path = self.run_dir / "config.yaml"
        if self.enabled:
            with atomic_path(path) as tmp:
                tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def resume_from(self, step: int) -> None:
        """Load earlier records and drop those written after ``step``."""
        if not self.enabled or not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text().splitlines()
        self.records = [r for r in (json.loads(line) for line in lines if line.strip()) if r["step"] <= step]

    def log_eval(self, record: dict[str, Any]) -> None:
        """Append one evaluation record to ``metrics.jsonl`` and TensorBoard."""
        if not self.enabled:
            return
        self.records.append(record)
        text = "".join(json.dumps(r, allow_nan=True) + "\n" for r in self.records)
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text(text)
        for name, values in record["metrics"].items():
            for key, value in values.items():
                self.scalar(f"test/{key}/{name}", value, record["step"])
        summary = ", ".join(
            f"{name}: step {format_error(v['rel_l2_step'])} rollout {format_error(v['rel_l2_rollout'])}"
            for name, v in record["metrics"].items()
        )
        log.info("eval at step %d (epoch %d): %s", record["step"], record["epoch"], summary)

    # ------------------------------------------------------------------ scalars
    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.enabled and math.isfinite(float(value)) and (writer := self._tensorboard_writer()) is not None:
            writer.add_scalar(tag, float(value), step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        if self.enabled and (writer := self._tensorboard_writer()) is not None:
            writer.add_histogram(tag, values, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        self._writer_class = None  # (a closed logger writes no new event file)
