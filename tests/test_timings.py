"""`safemaml train` progress shows where each iteration's time went, as recorded in metrics.csv."""

import csv
import re

from helpers import tiny_config

from safemaml.runs.train import train


def test_progress_line_shows_the_sampling_adaptation_meta_step_breakdown_of_metrics_csv(tmp_path, capsys):
    train(tiny_config(iterations=2), tmp_path / "run")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(lines) == len(rows) == 2
    for line, row in zip(lines, rows):
        shown = re.search(r"sampling ([\d.]+) s / adaptation ([\d.]+) s / meta-step ([\d.]+) s", line)
        assert shown, line
        for value, field in zip(shown.groups(), ("time_sampling", "time_adapt", "time_optimize")):
            assert abs(float(value) - float(row[field])) <= 0.05 + 1e-6
