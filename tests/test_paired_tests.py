"""Protocol R2.3's tests (safemaml.measure.paired_tests, experiments/longer_tests.py): paired t-tests of arms
against a control over seeds, Holm over the arms, the decision rule; checked against hand-computed values,
scipy's own paired t-test and the round-1 comparison's committed table."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from safemaml.errors import SafeMamlError
from safemaml.measure.paired import holm, paired_t_test
from safemaml.measure.paired_tests import against_control, collect, largest_mean_gamma, summary_value, violation_rate_at

ROOT = Path(__file__).resolve().parents[1]
ROUND1 = ROOT / "experiments/results/comparison-halfcheetah-vel/compare"


def test_holm_against_hand_computed_adjustments():
    # sorted p 0.01, 0.04 -> 2 x 0.01 = 0.02, then max(0.02, 1 x 0.04) = 0.04; order of the input kept
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    # 0.02 -> 0.04; 0.03 -> max(0.04, 0.03) = 0.04 (monotone); capped at 1
    assert holm([0.03, 0.02]) == pytest.approx([0.04, 0.04])
    assert holm([0.7, 0.9, 0.01]) == pytest.approx([1.0, 1.0, 0.03])
    # an undefined test still counts in m (as p = 1): the other is adjusted for both, 2 x 0.02
    assert np.isnan(holm([float("nan"), 0.02])[0]) and holm([float("nan"), 0.02])[1] == pytest.approx(0.04)


def test_the_paired_t_test_is_scipys():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), rng.normal(size=6)
    assert paired_t_test(x, y) == pytest.approx(stats.ttest_rel(x, y).pvalue, rel=1e-9)
    # by hand: d = 1, 2, 3 -> t = 2 / (1 / sqrt 3) = 3.4641, two-sided with 2 df: 0.074180
    assert paired_t_test([1, 2, 3], [0, 0, 0]) == pytest.approx(0.074180, abs=1e-6)
    assert np.isnan(paired_t_test([1], [0]))  # one pair: undefined


def test_differences_equal_in_value_decide_alike():
    # every seed one task of 40 lower: exactly equal differences, and the same in value but unequal in floating
    # point (8/40 - 7/40 != 3/40 - 2/40); both are the t-test's limit |t| = inf, p = 0, not 6e-78 against NaN
    exact = paired_t_test([7 / 40] * 6, [8 / 40] * 6)
    rounded = paired_t_test([7 / 40, 2 / 40] * 3, [8 / 40, 3 / 40] * 3)
    assert exact == rounded == 0.0
    assert paired_t_test([0.2] * 6, [0.2] * 6) == 1.0  # no difference at all: t = 0


def test_round_1_differences_equal_the_committed_comparison_table():
    values = collect(ROUND1, ["maml", "cvar", "lagrangian"], "eval", summary_value("violation_rate"))
    with (ROUND1 / "comparison_objectives.csv").open() as f:
        table = {r["objective"]: r for r in csv.DictReader(f)}
    for row in against_control(values, "maml", ["cvar", "lagrangian"]):
        expected = table[row.arm]
        assert row.seeds == 6
        assert row.difference == pytest.approx(float(expected["diff_violation_rate"]), abs=1e-12)
        assert [row.lo, row.hi] == pytest.approx([float(expected["diff_lo_violation_rate"]),
                                                  float(expected["diff_hi_violation_rate"])], abs=1e-12)
        assert row.p_wilcoxon == pytest.approx(float(expected["seed_wilcoxon_p_violation_rate"]))


def _evaluation(folder: Path, rate: float, post_return: float, iteration: int, beta: float = 0.1) -> None:
    """An evaluation of 100 tasks, 60 rounds: round(100 x rate) tasks with 50 wins (p̂ 0.83, violating at
    β 0.1), the rest 60; task 0's mean Γ is 100 x rate (the band peak), the others' −5. summary.json as
    `safemaml evaluate` writes it, at `beta`."""
    folder.mkdir(parents=True)
    bad = round(100 * rate)
    rows = "".join(f"{i},{0.3 + i / 100},{rate * 100 if i == 0 else -5},{50 if i < bad else 60}\n" for i in range(100))
    (folder / "tasks.csv").write_text("task_index,goal_velocity,mean_gamma,wins\n" + rows)
    summary = {"violation_rate": bad / 100, "post_return": post_return, "iteration": iteration, "rounds": 60,
               "beta": beta}
    (folder / "summary.json").write_text(json.dumps(summary))


def _runs(root: Path, arms: dict[str, list[float]], iteration: int = 120) -> Path:
    """ARM/seed-N/{eval,eval-band,eval-fresh} with V̂ and post_return per seed; band peaks = V̂ x 100."""
    for arm, rates in arms.items():
        for seed, rate in enumerate(rates):
            run = root / arm / f"seed-{seed}"
            for folder in ("eval", "eval-band", "eval-fresh"):
                _evaluation(run / folder, rate, -100 - seed, iteration)
            column = "objective_cvar_C" if arm == "cvar" else "objective_multiplier"
            (run / "metrics.csv").write_text(f"iteration,{column}\n" + "".join(
                f"{i},{1.0 - i / 100 if arm == 'cvar' else i / 10}\n" for i in range(iteration)))
    return root


def test_v_hat_is_rescored_at_one_beta_by_hand(tmp_path):
    # 60 rounds; wins 53, 54, 57, 60, 50: p̂ 0.883, 0.9, 0.95, 1, 0.833. At β 0.1 (p̂ < 0.9) tasks 0 and 4
    # violate: 2 of 5 (0.9 itself does not); at β 0.05 (p̂ < 0.95) tasks 0, 1 and 4: 3 of 5
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "tasks.csv").write_text("task_index,wins\n0,53\n1,54\n2,57\n3,60\n4,50\n")
    (folder / "summary.json").write_text(json.dumps({"rounds": 60, "beta": 0.05, "violation_rate": 0.6}))
    assert violation_rate_at(0.1)(folder) == pytest.approx(0.4)
    assert violation_rate_at(0.05)(folder) == pytest.approx(0.6)
    # at its own β the summary must agree with the wins, or the folder is inconsistent
    (folder / "summary.json").write_text(json.dumps({"rounds": 60, "beta": 0.05, "violation_rate": 0.4}))
    with pytest.raises(SafeMamlError, match="same β"):
        violation_rate_at(0.05)(folder)


@pytest.mark.parametrize("root", [ROUND1, ROOT / "experiments/results/longer-halfcheetah-vel"])
def test_rescoring_at_each_evaluations_own_beta_reproduces_its_summary(root):
    # the independent reference: the V̂ that `safemaml evaluate` computed from the rounds themselves, at β 0.1
    # (round 1) and at cvar's 0.187 and the lagrangian's 0.052 (R2.3's evaluations, before the fix of longer.sh)
    for folder in sorted(root.glob("*/seed-*/eval*")):
        if not (folder / "tasks.csv").is_file():
            continue
        summary = json.loads((folder / "summary.json").read_text())
        assert violation_rate_at(summary["beta"])(folder) == summary["violation_rate"], folder


def test_holm_runs_over_the_arms_and_the_rule_needs_the_fresh_sign(tmp_path):
    root = _runs(tmp_path, {"maml": [0.2] * 6, "cvar": [0.10, 0.12, 0.11, 0.13, 0.10, 0.12],
                            "lagrangian": [0.21, 0.19, 0.2, 0.22, 0.18, 0.2]})
    values = collect(root, ["maml", "cvar", "lagrangian"], "eval", summary_value("violation_rate"))
    cvar, lagrangian = against_control(values, "maml", ["cvar", "lagrangian"])
    assert cvar.lower == 6 and cvar.difference == pytest.approx(-0.08667, abs=1e-5)
    assert cvar.p_holm == pytest.approx(2 * cvar.p_t)  # the smaller p times the 2 objectives
    assert lagrangian.p_holm == pytest.approx(max(cvar.p_holm, lagrangian.p_t))
    assert collect(root, ["cvar"], "eval-band", largest_mean_gamma)["cvar"][0] == pytest.approx(10.0)
    run = subprocess.run([sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "cvar: established reduction of V̂" in run.stdout
    assert "lagrangian: not established" in run.stdout
    assert "cvar/seed-0: C <= 0 at 20 of 100 iterations 21-120" in run.stdout  # C = 1 - i/100 <= 0 from i = 100
    assert "lagrangian/seed-0: λ at 21 2, at 120 11.9" in run.stdout


def test_longer_tests_scores_every_arm_at_one_beta_not_at_its_own(tmp_path):
    # cvar's evaluations made at its own β 0.05, their summaries' V̂ 0.9: the analysis must not read those
    root = _runs(tmp_path, {"maml": [0.2] * 6, "cvar": [0.10, 0.12, 0.11, 0.13, 0.10, 0.12], "lagrangian": [0.2] * 6})
    for summary in root.glob("cvar/seed-*/eval*/summary.json"):
        summary.write_text(json.dumps({**json.loads(summary.read_text()), "beta": 0.05, "violation_rate": 0.9}))
    script = [sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)]
    run = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "V̂ at β = 0.1 for every arm" in run.stdout
    assert "| cvar | 6 | 0.1133 | -0.08667" in run.stdout and "cvar: established reduction of V̂" in run.stdout
    # at β 0.2 (p̂ < 0.8) no task violates in any arm: every difference 0
    run = subprocess.run(script + ["--beta", "0.2"], capture_output=True, text=True, cwd=tmp_path)
    assert "| cvar | 6 | 0 | +0 [+0, +0]" in run.stdout
    run = subprocess.run(script + ["--beta", "1.5"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith("--beta must be in (0, 1), not 1.5")


def test_a_test_that_rejects_only_before_holm_is_not_established(tmp_path):
    # cvar alone: t-test p 0.032 <= 0.05, but Holm over the two objectives doubles it to 0.065
    root = _runs(tmp_path, {"maml": [0.2] * 6, "cvar": [0.10, 0.19, 0.14, 0.2, 0.15, 0.16],
                            "lagrangian": [0.21, 0.19, 0.2, 0.22, 0.18, 0.2]})
    values = collect(root, ["maml", "cvar", "lagrangian"], "eval", summary_value("violation_rate"))
    cvar = against_control(values, "maml", ["cvar", "lagrangian"])[0]
    assert cvar.p_t == pytest.approx(0.032391, abs=1e-5) and cvar.p_holm == pytest.approx(0.064783, abs=1e-5)
    run = subprocess.run([sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert "cvar: not established (primary Holm p 0.0648 > 0.05)" in run.stdout


def test_the_fresh_set_with_the_other_sign_blocks_the_claim(tmp_path):
    root = _runs(tmp_path, {"maml": [0.2] * 6, "cvar": [0.10, 0.12, 0.11, 0.13, 0.10, 0.12],
                            "lagrangian": [0.2] * 6})
    for seed in range(6):  # on the fresh tasks cvar violates more than maml
        shutil.rmtree(root / "cvar" / f"seed-{seed}" / "eval-fresh")
        _evaluation(root / "cvar" / f"seed-{seed}" / "eval-fresh", 0.3, 0, 120)
    run = subprocess.run([sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert "cvar: not established (the primary rejects" in run.stdout
    assert "but the fresh task set's difference is +0.1, not below 0)" in run.stdout


def test_a_significant_rise_of_v_hat_is_reported_as_no_reduction(tmp_path):
    # lagrangian above maml on every seed (the mirror of the first test's cvar): Holm rejects, but upwards
    root = _runs(tmp_path, {"maml": [0.2] * 6, "cvar": [0.2] * 6,
                            "lagrangian": [0.30, 0.28, 0.29, 0.27, 0.30, 0.28]})
    run = subprocess.run([sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "lagrangian: no reduction: lagrangian's V̂ is higher than the control's" in run.stdout
    assert "difference +0.0867)" in run.stdout
    assert "cvar: not established" in run.stdout


def test_runs_not_at_the_protocol_iteration_or_missing_are_refused(tmp_path):
    root = _runs(tmp_path / "a", {"maml": [0.2] * 3, "cvar": [0.1] * 3, "lagrangian": [0.2] * 3}, iteration=60)
    script = [sys.executable, str(ROOT / "experiments/longer_tests.py"), str(root)]
    run = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)  # 3 seeds, the protocol 6
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "the protocol [0, 1, 2, 3, 4, 5]" in run.stderr
    run = subprocess.run(script + ["--seeds", "0", "1", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "not evaluated at iteration 120" in run.stderr
    (root / "cvar" / "seed-1" / "metrics.csv").unlink()
    run = subprocess.run(script + ["--seeds", "0", "1", "2", "--iterations", "60"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "metrics.csv" in run.stderr
    shutil.rmtree(root / "cvar" / "seed-2" / "eval-fresh")
    with pytest.raises(SafeMamlError, match="evaluate the run first"):
        collect(root, ["cvar"], "eval-fresh", summary_value("violation_rate"))
    shutil.rmtree(root / "lagrangian" / "seed-1")
    values = collect(root, ["maml", "lagrangian"], "eval", summary_value("violation_rate"))
    with pytest.raises(SafeMamlError, match="cannot pair"):
        against_control(values, "maml", ["lagrangian"])
