import csv
import json

import numpy as np
import pytest
from helpers import tiny_config
from scipy import stats

from safemaml.cli.main import main
from safemaml.config import EvalRequest
from safemaml.runs.compare import compare


def _task_gammas(path):
    with path.open() as f:
        return np.array([float(r["mean_gamma"]) for r in csv.DictReader(f)])


def test_compare_trains_each_objective_and_tests_pairs(tmp_path):
    cfg = tiny_config(iterations=2, **{"objective.beta": 0.2, "objective.delta": 0.3})
    rows = compare(cfg, ["maml", "cvar"], tmp_path, EvalRequest(trajectories=4, repeats=3), quiet=True)
    assert [r["objective"] for r in rows] == ["maml", "cvar"]
    with (tmp_path / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["objective"] for r in table] == ["maml", "cvar"]
    gammas = {name: _task_gammas(tmp_path / name / "eval" / "tasks.csv") for name in ("maml", "cvar")}
    p = stats.wilcoxon(gammas["cvar"], gammas["maml"]).pvalue
    assert float(table[1]["task_wilcoxon_p"]) == pytest.approx(p)
    # both runs saw the same evaluation tasks
    with (tmp_path / "maml" / "eval" / "tasks.csv").open() as a, (tmp_path / "cvar" / "eval" / "tasks.csv").open() as b:
        assert [r["goal_x"] for r in csv.DictReader(a)] == [r["goal_x"] for r in csv.DictReader(b)]
    assert "| cvar |" in (tmp_path / "comparison.md").read_text()


def test_compare_seeds_has_per_seed_rows_and_a_test_paired_over_seeds(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--tasks", "nav2d", "--objectives", "maml", "cvar", "--seeds", "0", "1", "2",
                 "--iterations", "2", "--beta", "0.3", "--delta", "0.5", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2",
                 "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]", "--trajectories", "2",
                 "--repeats", "3", "--out", str(out), "--quiet"]) == 0
    assert "paired over the 3 seeds (the unit)" in capsys.readouterr().out
    with (out / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["objective"], r["seed"]) for r in table] == [(o, s) for s in "012" for o in ("maml", "cvar")]
    seed_level = {}
    for name in ("maml", "cvar"):  # from the runs' own files, not from the code under test
        summaries = [json.loads((out / name / f"seed-{s}" / "eval" / "summary.json").read_text()) for s in range(3)]
        seed_level[name] = {m: np.array([s[m] for s in summaries])
                            for m in ("violation_rate", "mean_gamma", "post_return", "pre_return", "action_std")}
        configs = [(out / name / f"seed-{s}" / "config.toml").read_text() for s in range(3)]
        assert [f"seed = {s}" in c for s, c in enumerate(configs)] == [True] * 3
    with (out / "comparison_objectives.csv").open() as f:
        objectives = {r["objective"]: r for r in csv.DictReader(f)}
    assert objectives["cvar"]["seeds"] == "3"
    assert float(objectives["cvar"]["mean_gamma_mean"]) == pytest.approx(seed_level["cvar"]["mean_gamma"].mean())
    for metric in ("violation_rate", "mean_gamma"):
        x, y = seed_level["cvar"][metric], seed_level["maml"][metric]
        expected = np.nan if np.all(x == y) else stats.wilcoxon(x, y).pvalue
        assert float(objectives["cvar"][f"seed_wilcoxon_p_{metric}"]) == pytest.approx(expected, nan_ok=True)
    assert np.isfinite(float(objectives["cvar"]["seed_wilcoxon_p_mean_gamma"]))
    for metric in ("post_return", "pre_return", "action_std"):  # the cost, sandbagging, the std confound
        x, y = seed_level["cvar"][metric], seed_level["maml"][metric]
        interval = stats.ttest_rel(x, y).confidence_interval(0.95)
        assert float(objectives["cvar"][f"diff_{metric}"]) == pytest.approx(np.mean(x - y))
        assert float(objectives["cvar"][f"diff_lo_{metric}"]) == pytest.approx(interval.low)
        assert float(objectives["cvar"][f"diff_hi_{metric}"]) == pytest.approx(interval.high)
        assert objectives["maml"][f"diff_{metric}"] == "nan"  # the reference has no difference from itself
    report = (out / "comparison.md").read_text()
    assert "Each arm minus maml, paired over the 3 seeds" in report
    power = seed_level_power(out)  # 3 rounds: even p_T = 1 cannot pass at beta = 0.3
    assert power is None and "no task can pass its per-task test" in report
    # the task-level test stays, per seed, as a secondary column
    g = {name: _task_gammas(out / name / "seed-1" / "eval" / "tasks.csv") for name in ("maml", "cvar")}
    assert float(table[3]["task_wilcoxon_p"]) == pytest.approx(stats.wilcoxon(g["cvar"], g["maml"]).pvalue)


def seed_level_power(out):
    return json.loads((out / "maml" / "seed-0" / "eval" / "summary.json").read_text())["min_passing_p"]


def test_compare_refuses_seed_and_seeds_together(capsys):
    assert main(["compare", "--tasks", "nav2d", "--seed", "1", "--seeds", "0", "1", "--out", "x"]) == 2
    assert "--seed or --seeds" in capsys.readouterr().err


def test_compare_arms_file_trains_each_arm_with_its_settings(tmp_path, capsys):
    arms = tmp_path / "arms.toml"
    arms.write_text('[arms.maml]\nobjective = {name = "maml"}\n\n'
                    '[arms.maml-fixed-std]\nobjective = {name = "maml"}\npolicy = {learn_std = false, init_std = 0.5}\n\n'
                    '[arms.cvar-neutral.objective]\nname = "cvar"\neta = 2.0\naim = "neutral"\n')
    out = tmp_path / "cmp"
    assert main(["compare", "--tasks", "nav2d", "--arms", str(arms), "--iterations", "1", "--beta", "0.3",
                 "--delta", "0.5", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2",
                 "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]", "--trajectories", "2",
                 "--repeats", "2", "--out", str(out), "--quiet"]) == 0
    with (out / "comparison.csv").open() as f:
        assert [r["objective"] for r in csv.DictReader(f)] == ["maml", "maml-fixed-std", "cvar-neutral"]
    fixed = (out / "maml-fixed-std" / "config.toml").read_text()
    assert "learn_std = false" in fixed and "init_std = 0.5" in fixed
    neutral = (out / "cvar-neutral" / "config.toml").read_text()
    assert 'aim = "neutral"' in neutral and "eta = 2.0" in neutral and "beta = 0.3" in neutral
    summary = json.loads((out / "maml-fixed-std" / "eval" / "summary.json").read_text())
    assert summary["action_std"] == pytest.approx(0.5)


@pytest.mark.parametrize("text,message", [
    ("[arms.a]\nobjective = {name = \"nope\"}\n", "arm 'a': unknown objective"),
    ("[arms.a]\nadapt = {fast_lr = -1.0}\n", "arm 'a': adapt.fast_lr must be > 0"),
    ("[other]\nx = 1\n", "expected only [arms.NAME] tables"),
    ("[arms]\na = 1\n", "every arm must be a table"),
    ("[arms.a\n", "--arms"),
    ("[arms.\"../x\"]\nobjective = {name = \"maml\"}\n", "arm names are letters"),
])
def test_bad_arms_are_one_line_exit_2(tmp_path, capsys, text, message):
    arms = tmp_path / "arms.toml"
    arms.write_text(text)
    assert main(["compare", "--tasks", "nav2d", "--arms", str(arms), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_compare_refuses_objectives_and_arms_together(tmp_path, capsys):
    assert main(["compare", "--tasks", "nav2d", "--objectives", "maml", "--arms", "a.toml", "--out", "x"]) == 2
    assert "--objectives or --arms" in capsys.readouterr().err


def test_compare_band_evaluates_every_run_again_on_the_grid(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--tasks", "nav2d", "--objectives", "maml", "cvar", "--seeds", "0", "1",
                 "--iterations", "1", "--set", "meta_batch_size=2", "--set", "fast_batch_size=2",
                 "--set", "post_batch_size=2", "--set", "policy.hidden=[8,8]", "--trajectories", "2",
                 "--repeats", "3", "--band", "-0.5:0.5:0.5", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Tasks: drawn from p(T)" in text and "Tasks: the grid -0.5:0.5:0.5" in text
    with (out / "comparison-band.csv").open() as f:
        band = list(csv.DictReader(f))
    with (out / "comparison.csv").open() as f:
        sampled = list(csv.DictReader(f))
    assert [(r["objective"], r["seed"]) for r in band] == [(o, s) for s in "01" for o in ("maml", "cvar")]
    for row, other in zip(band, sampled):
        run = out / row["objective"] / f"seed-{row['seed']}"
        summary = json.loads((run / "eval-band" / "summary.json").read_text())
        assert summary["task_set"] == "grid" and float(row["mean_gamma"]) == pytest.approx(summary["mean_gamma"])
        with (run / "eval-band" / "tasks.csv").open() as f:
            goals = [(float(r["goal_x"]), float(r["goal_y"])) for r in csv.DictReader(f)]
        assert goals == [(x, y) for x in (-0.5, 0.0, 0.5) for y in (-0.5, 0.0, 0.5)]
        sampled_summary = json.loads((run / "eval" / "summary.json").read_text())
        assert sampled_summary["task_set"] == "sampled from p(T)"
        assert float(other["mean_gamma"]) == pytest.approx(sampled_summary["mean_gamma"])
        assert len((run / "metrics.csv").read_text().splitlines()) == 2  # trained once, evaluated twice
    with (out / "comparison_objectives-band.csv").open() as f:
        cvar = [r for r in csv.DictReader(f) if r["objective"] == "cvar"][0]
    gam = {o: [json.loads((out / o / f"seed-{s}" / "eval-band" / "summary.json").read_text())["mean_gamma"]
               for s in (0, 1)] for o in ("maml", "cvar")}
    assert float(cvar["mean_gamma_mean"]) == pytest.approx(np.mean(gam["cvar"]))


def test_compare_refuses_a_bad_band_before_training(tmp_path, capsys):
    assert main(["compare", "--tasks", "nav2d", "--objectives", "maml", "--band", "1:0:0.5",
                 "--out", str(tmp_path / "cmp")]) == 2
    assert "--band '1:0:0.5': need STEP > 0" in capsys.readouterr().err and not (tmp_path / "cmp").exists()


def test_comparison_md_states_the_certificates_power():
    from safemaml.runs.compare import markdown_table, objective_rows

    rows = [{"objective": o, "seed": s, "pre_return": -3.0, "post_return": -2.0 - s, "mean_gamma": -1.0,
             "mean_gamma_ci": "[-2.00, 0.00]", "cvar_gamma": 0.5, "frac_negative": 0.1, "violation_rate": v,
             "certified_fraction": 0.8, "certified": False, "action_std": 0.5, "min_passing_p": 0.9655,
             "task_wilcoxon_p": float("nan")} for s in (0, 1) for o, v in (("maml", 0.2), ("cvar", 0.1))]
    summary = objective_rows(rows, ["maml", "cvar"])
    text = markdown_table(rows, summary, tiny_config(), 0.1, 0.1)
    assert "probability >= 0.8 when p_T >= 0.966 (min_passing_p)" in text
    # V-hat lower by 0.1 on both seeds: the interval is a point, Wilcoxon has too few pairs to be small
    assert "| cvar | -0.1 [-0.1, -0.1] (p 0.5)" in text


def test_a_difference_that_cancels_to_float_residue_reads_as_zero():
    # nav2d's cvar-neutral: per-seed V-hat differences that cancel left a mean of 1.16e-18 in comparison.md
    from safemaml.runs.compare import SEED_TESTED, difference_table

    nan = float("nan")
    row = {"objective": "cvar-neutral"} | {f"{k}_{m}": nan for m in SEED_TESTED
                                           for k in ("diff", "diff_lo", "diff_hi", "seed_wilcoxon_p")}
    row |= {"diff_violation_rate": 1.16e-18, "diff_lo_violation_rate": -0.0287, "diff_hi_violation_rate": 0.0287,
            "seed_wilcoxon_p_violation_rate": 1.0}
    text = difference_table([{"objective": "maml"}, row], 6)
    assert "| cvar-neutral | +0 [-0.0287, +0.0287] (p 1) | — |" in text


def test_equal_differences_of_task_fractions_are_ties_in_the_seed_test():
    # HalfCheetahVel's comparison, V-hat on 40 tasks over seeds 0-5 (compare/comparison.csv): cvar-neutral
    # violated 8, 7, 9, 9, 7, 9 tasks, maml 7, 8, 8, 8, 7, 9; three differences of +1 task, one of -1. In floating
    # point 8/40 - 7/40 = 0.025000000000000022 but 9/40 - 8/40 = 0.02499999999999991, which the test ranked apart
    # (p 0.75 in the CSV instead of 0.625)
    from safemaml.runs.compare import paired_wilcoxon

    n = 40
    arm, reference = np.array([8, 7, 9, 9, 7, 9]), np.array([7, 8, 8, 8, 7, 9])
    fraction = [np.mean(np.arange(n) < k) for k in range(n + 1)]  # a share of tasks, as evaluate computes it
    x, y = np.array([fraction[k] for k in arm]), np.array([fraction[k] for k in reference])
    assert len({abs(d) for d in (x - y)[arm != reference]}) > 1  # the floats do split the tie
    expected = stats.wilcoxon(arm - reference).pvalue  # integer differences: exact ties, the zeros dropped
    assert expected == pytest.approx(0.625)
    assert paired_wilcoxon(x, y) == pytest.approx(expected)
    assert np.isnan(paired_wilcoxon(x, x + 1e-17))  # every difference zero up to rounding: undefined
