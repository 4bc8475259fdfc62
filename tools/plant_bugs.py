"""Plant each bug of issue #12 in turn, run the tests meant to catch it, restore the file, and report.

    python tools/plant_bugs.py                # every bug: KILLED (with the first failing test) or SURVIVED
    python tools/plant_bugs.py --import-time  # mutmut's mutants of code that runs at import (docs/testing.md)
    python tools/plant_bugs.py --only WORDS   # the bugs whose description contains WORDS

Run from the repository root with the project importable. The source file is always restored, also
on Ctrl-C. The table in docs/testing.md is this script's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EVAL_RESUME = "tests/test_evaluate.py::test_an_interrupted_evaluation_continues_from_its_finished_rounds"
POSITIVE_CONTROL = ("tests/test_positive_control.py::"
                    "test_the_lagrangians_meta_gradient_lowers_the_exact_violation_rate_more_than_mamls")
LIVE_WORKER = "tests/test_study.py::test_a_worker_does_not_start_a_trial_another_live_worker_is_finishing"

# (what, file, text, replacement, test files)
BUGS = [
    ("PID integral without anti-windup", "objectives/multipliers.py",
     "self.integral = max(0.0, self.integral + self.ki * error)", "self.integral = self.integral + self.ki * error",
     ["tests/test_objective_state.py"]),
    ("PID integral not checkpointed", "objectives/multipliers.py", '("value", "integral", "previous")',
     '("value", "previous")', ["tests/test_objective_state.py"]),
    ("PID previous violation not checkpointed", "objectives/multipliers.py", '("value", "integral", "previous")',
     '("value", "integral")', ["tests/test_objective_state.py"]),
    ("PID integral starts at 0 (lambda_0 forgotten after the first step)", "objectives/multipliers.py",
     "self.integral = self.initial", "self.integral = 0.0", ["tests/test_multipliers.py"]),
    ("old checkpoint's PID integral mapped without K_I", "objectives/lagrangian.py",
     '"lambda.integral": self.ki * float(old["integral"])', '"lambda.integral": float(old["integral"])',
     ["tests/test_multipliers.py"]),
    ("lagrangian PID trials draw lambda_lr, not the gains", "objectives/lagrangian.py",
     '        if update == "dual":\n            params["lambda_lr"]',
     '        if True:\n            params["lambda_lr"]',
     ["tests/test_search_spaces.py", "tests/test_study_space.py"]),
    ("objective state not restored on resume", "safemaml/runs/train.py",
     'learner.objective.load_state_dict(ckpt["objective"])', "pass", ["tests/test_objective_state.py"]),
    ("direction reward ignores the direction", "safemaml/tasks/locomotion.py",
     "return direction * x_velocity", "return x_velocity", ["tests/test_rewards.py"]),
    ("HalfCheetah control weight 0.05 -> 0.1", "safemaml/tasks/locomotion.py", "ctrl=0.05", "ctrl=0.1",
     ["tests/test_rewards.py"]),
    ("ant-dir survive bonus 0.05 -> 1.05", "safemaml/tasks/locomotion.py",
     "ANT_DIR_WEIGHTS = RewardWeights(ctrl=0.005, contact=5e-4, survive=0.05)",
     "ANT_DIR_WEIGHTS = RewardWeights(ctrl=0.005, contact=5e-4, survive=1.05)", ["tests/test_rewards.py"]),
    ("control cost on unclipped actions", "safemaml/envs/mujoco_batch.py",
     "actions = np.clip(actions, self.ctrl_low, self.ctrl_high)", "pass", ["tests/test_rewards.py"]),
    ("leave-one-out rescaling m/(m - 1) dropped", "objectives/penalty.py", " * m / (m - 1)", "",
     ["tests/test_references.py"]),
    ("lagrangian pair temperature tau * s -> tau", "objectives/lagrangian.py",
     "torch.sigmoid(gamma / (self.tau * s))", "torch.sigmoid(gamma / self.tau)", ["tests/test_gradients.py"]),
    ("lagrangian gradient 8% too large", "objectives/lagrangian.py",
     "dV_dv = h * (1 - h) / (self.tau_h * K)", "dV_dv = h * (1 - h) / (self.tau_h * K) * 1.08",
     ["tests/test_gradients.py"]),
    ("cvar VaR at level 0.25 instead of beta", "objectives/cvar.py",
     "nu = value_at_risk(flat, self.beta)", "nu = value_at_risk(flat, 0.25)", ["tests/test_gradients.py"]),
    ("inner loss sign flipped (adapt and Fisher product)", "safemaml/engine/adapt.py",
     "return -(logp * adv * mask)", "return (logp * adv * mask)", ["tests/test_references.py"]),
    ("Adam without bias correction", "safemaml/engine/metaopt.py",
     "m_hat, v_hat = m / (1 - b1 ** self.steps), v / (1 - b2 ** self.steps)", "m_hat, v_hat = m, v",
     ["tests/test_references.py"]),
    ("inner loss normalised by all steps", "safemaml/engine/adapt.py",
     "mask.sum((-2, -1)).clamp_min(1.0)", "torch.ones_like(mask).sum((-2, -1))", ["tests/test_masked.py"]),
    ("surrogate and KL normalised by all steps", "safemaml/engine/metastep.py",
     "steps = post.mask.sum((1, 2)).clamp_min(1.0)", "steps = torch.ones_like(post.mask).sum((1, 2))",
     ["tests/test_masked.py"]),
    ("Fisher product's KL normalised by all steps", "safemaml/engine/fisher.py",
     "steps = post.mask.sum((1, 2)).clamp_min(1.0)", "steps = torch.ones_like(post.mask).sum((1, 2))",
     ["tests/test_masked.py"]),
    ("post-update log-likelihood over steps not taken", "safemaml/engine/metastep.py",
     "post_loglik=(logp_post * post.mask).sum(-1)", "post_loglik=logp_post.sum(-1)", ["tests/test_masked.py"]),
    ("return-to-go runs past the end", "safemaml/engine/returns.py",
     "running = (rewards[..., t] + gamma * running) * mask[..., t]",
     "running = rewards[..., t] + gamma * running", ["tests/test_masked.py"]),
    ("GAE bootstraps from steps not taken", "safemaml/engine/returns.py",
     "next_values = torch.cat([values[..., 1:] * mask[..., 1:]", "next_values = torch.cat([values[..., 1:]",
     ["tests/test_masked.py"]),
    ("advantage variance over steps not taken", "safemaml/engine/returns.py",
     "var = ((x - mean).pow(2) * mask)", "var = (x - mean).pow(2)", ["tests/test_masked.py"]),
    ("interrupted evaluation starts over", "safemaml/runs/evaluate.py",
     "pre_all, held_all, post_all = load_rounds(progress, key, (len(tasks), n, repeats))",
     "pre_all, held_all, post_all = [], [], []",
     [EVAL_RESUME]),
    ("evaluation's saved rounds used for another request", "safemaml/runs/evaluate.py",
     'if str(data["key"]) != key or', "if", [EVAL_RESUME]),
    ("evaluation's saved rounds kept after it completes", "safemaml/runs/evaluate.py",
     "    progress.unlink(missing_ok=True)", "    pass", [EVAL_RESUME]),
    ("study worker ignores trials running elsewhere", "safemaml/studies/study.py",
     "while finished(study) + running_elsewhere(study) < trials:", "while finished(study) < trials:", [LIVE_WORKER]),
    ("dead worker's trial counted as running", "safemaml/studies/study.py",
     "        optuna.storages.fail_stale_trials(study)", "        pass", [LIVE_WORKER]),
    ("--enqueue skips a point whose trials all failed", "safemaml/studies/study.py",
     "TrialState.RUNNING, TrialState.WAITING)", "TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL)",
     ["tests/test_study.py::test_enqueued_points_run_first_and_are_not_queued_twice"]),
    ("lagrangian penalty's sign flipped", "objectives/lagrangian.py",
     "loss = batch.surrogates.mean() + score_surrogate(", "loss = batch.surrogates.mean() - score_surrogate(",
     [POSITIVE_CONTROL]),
    ("lagrangian penalty dropped (its weights times 0: MAML)", "objectives/lagrangian.py",
     "weights = self.lam.value * dV_dv", "weights = 0.0 * dV_dv", [POSITIVE_CONTROL]),
]

# Issue 25's hostile pass (tests/test_hostile.py): each check taken out again, one per class and command.
H = "tests/test_hostile.py::"
REFUSED = H + "test_bad_request_is_one_line_and_writes_nothing"
BUGS += [(f"hostile: {what}", path, text, replacement, tests) for what, path, text, replacement, tests in [
    ("compare continues another request in its OUT (overwrite)", "safemaml/runs/compare_request.py",
     "if stored != request:", "if False:", [H + "test_compare_refuses_another_request_into_its_folder"]),
    ("compare trusts a folder from before the request file (overwrite)", "safemaml/runs/compare_request.py",
     "_check_legacy(out, request)", "pass", [H + "test_compare_checks_a_folder_made_before_the_request_file"]),
    ("compare checks the evaluation after training (late)", "safemaml/runs/compare_request.py",
     "    check_evaluation(evaluation)\n", "", [REFUSED + "[late-compare-zero-trajectories]"]),
    ("compare lets an arm change the task family (silent)", "safemaml/runs/compare_request.py",
     "if data[key] != base[key]:", "if False:", [REFUSED + "[silent-compare-arm-changes-family]"]),
    ("compare --seeds -1 0 joined into --seeds=-1 (message)", "safemaml/cli/main.py",
     "and not PLAIN_NEGATIVE.match(token)):", "and True):", [REFUSED + "[message-compare-negative-seed-in-a-list]"]),
    ("train seed beyond 64 bits (traceback)", "safemaml/config.py", "if self.seed > MAX_SEED:", "if False:",
     [REFUSED + "[traceback-train-seed-beyond-64-bits]"]),
    ("sample seed beyond 64 bits (traceback)", "safemaml/cli/main.py", 'seed_arg(args.seed, "--seed")', "pass",
     [REFUSED + "[traceback-sample-seed-beyond-64-bits]"]),
    ("study infinite --search bound (traceback)", "safemaml/studies/study.py",
     "study_checks.finite_bounds(item, low, high)", "pass", [REFUSED + "[traceback-study-infinite-bound]"]),
    ("study --sampler-seed unbounded (traceback)", "safemaml/studies/checks.py",
     'optional(int_arg, sampler_seed, "--sampler-seed", 0, MAX_SAMPLER_SEED)', "pass",
     [REFUSED + "[traceback-study-sampler-seed]"]),
    ("study evaluation checked in the trial (late)", "safemaml/studies/study.py",
     "study_checks.evaluation(evaluation, family)", "pass", [REFUSED + "[late-study-sample-zero]"]),
    ("study --init checked in the trial (late)", "safemaml/studies/study.py", "study_checks.init(cfg)", "pass",
     [REFUSED + "[late-study-init-missing]"]),
    ("study continued where none is, after making study.db (late)", "safemaml/cli/study.py",
     "study_checks.storage_before_open(Path(args.dir), args.storage, given, args.heartbeat, args.grace)", "pass",
     [REFUSED + "[late-study-continue-nothing]"]),
    ("study duplicate --search names (silent)", "safemaml/studies/checks.py",
     "if name in (inside if separator else seen):", "if False:", [REFUSED + "[silent-study-duplicate-search]"]),
    ("study --prune-every 0 (silent)", "safemaml/studies/checks.py", '"--prune-every", 1)', '"--prune-every", 0)',
     [REFUSED + "[silent-study-prune-every-zero]"]),
    ("study Ctrl-C's last line is the run's train --resume (message)", "safemaml/studies/study.py",
     'raise KeyboardInterrupt(f"interrupted; finished trials are saved. Continue with: {hint}") from None',
     "raise", [H + "test_ctrl_c_in_a_study_trial_says_to_continue_the_study"]),
    ("evaluate --sample unbounded (silent)", "safemaml/runs/evaluate.py", "if count > MAX_GRID_TASKS:", "if False:",
     [REFUSED + "[silent-evaluate-huge-sample]"]),
    ("evaluate --out may be the run (overwrite)", "safemaml/runs/evaluate.py", "    check_evaluation_out(run, out)",
     "    pass", [REFUSED + "[overwrite-evaluate-out-is-the-run]"]),
    ("evaluate reads a damaged rounds file (traceback)", "safemaml/runs/evaluate.py",
     "    except Exception:  # a damaged file", "    except (OSError, ValueError, KeyError):  # a damaged file",
     [H + "test_a_truncated_rounds_file_is_sampled_again_to_the_same_evaluation"]),
    ("resume pads a metrics.csv reduced to its header (silent)", "safemaml/runs/integrity.py",
     "if len(rows) < done:", "if False:", [H + "test_resume_refuses_metrics_it_would_pad_or_cut"]),
    ("resume keeps a row cut before last.pt (silent)", "safemaml/runs/integrity.py",
     "if not complete or iteration != len(rows):", "if iteration != len(rows):",
     [H + "test_resume_refuses_metrics_cut_before_last_pt_and_names_the_checkpoint"]),
    ("resume trains with a config.toml that is not last.pt's (silent)", "safemaml/runs/integrity.py",
     "    if differ:\n        raise SafeMamlError(f\"{run / 'config.toml'} is not",
     "    if False:\n        raise SafeMamlError(f\"{run / 'config.toml'} is not",
     [H + "test_resume_refuses_a_config_toml_that_is_not_last_pts"]),
    ("report draws a row cut in the middle (traceback)", "safemaml/runs/rundir.py",
     "if None in row.values() or None in row:", "if False:",
     [H + "test_report_refuses_a_row_cut_in_the_middle_and_a_foreign_table"]),
    ("API: safemaml.train(config, 42) (TypeError)", "safemaml/api.py",
     'folder: Path | None = optional(path_arg, out, "out")', "folder = out",
     [H + "test_api_raises_safemaml_error_for_any_bad_argument[train-out-an-int]"]),
    ("API: evaluate(grid=tuple) (AttributeError)", "safemaml/checks.py", 'optional(str_arg, request.grid, "grid")',
     "None", [H + "test_api_raises_safemaml_error_for_any_bad_argument[evaluate-grid-a-tuple]"]),
    ("API: load_run of a damaged tasks.csv (UnicodeDecodeError)", "safemaml/api.py",
     "except (UnicodeDecodeError, csv.Error):", "except csv.Error:",
     [H + "test_load_run_refuses_damaged_evaluation_files"]),
    ("API: load_run of a summary that is not an object (silent)", "safemaml/api.py", "if not isinstance(data, dict):",
     "if False:", [H + "test_load_run_refuses_damaged_evaluation_files"]),
    ("evaluate with a config.toml that is not last.pt's (silent)", "safemaml/runs/evaluate.py",
     "    check_config_matches_checkpoint(folder.config_path.read_text(), ckpt, folder.path)\n", "",
     [H + "test_evaluate_refuses_a_config_toml_that_is_not_last_pts"]),
    ("train over another run without naming the difference (message)", "safemaml/runs/train.py",
     "            if differ:  # another request", "            if False:  # another request",
     [REFUSED + "[overwrite-train-over-another-run]"]),
    ("study's damaged stored settings (traceback)", "safemaml/studies/settings.py",
     "        except (ValueError, KeyError, TypeError):", "        except ZeroDivisionError:",
     [H + "test_a_study_with_damaged_stored_settings_is_one_line"]),
    ("study run mixes a study into a run folder (overwrite)", "safemaml/studies/checks.py",
     "    if foreign:  # e.g. a run", "    if False:  # e.g. a run", [REFUSED + "[overwrite-study-run-into-a-run-folder]"]),
    ("a request beyond memory (traceback)", "safemaml/cli/main.py", "    except MemoryError:",
     "    except ZeroDivisionError:", [H + "test_a_request_beyond_memory_is_a_one_line_fault"]),
    ("study show makes a missing storage file (late)", "safemaml/cli/study.py",
     "study_checks.storage_reachable(args.storage, show, None if show else directory)", "pass",
     [REFUSED + "[late-study-show-storage-missing]"]),
]]

# Issue 28's TRPO direction options (tests/test_cg_precondition.py): each mechanism broken once.
CG = ["tests/test_cg_precondition.py"]
MLP, METAOPT, CURV = "safemaml/engine/mlp_curvature.py", "safemaml/engine/metaopt.py", "safemaml/engine/curvature.py"
BUGS += [(f"cg: {what}", path, text, replacement, CG) for what, path, text, replacement in [
    ("Fisher diagonal's second layer: slope not squared", MLP, "(metric @ (w * w)) * tape.slopes[last - 1] ** 2",
     "(metric @ (w * w)) * tape.slopes[last - 1]"),
    ("Fisher diagonal's deeper layers: |d| for d^2", MLP, "deeper[i] += metric[..., a:a + 1] * d * d",
     "deeper[i] += metric[..., a:a + 1] * d.abs()"),
    ("Fisher diagonal's log std without its factor 2", MLP, 'out["log_std"] = (2 * weight', 'out["log_std"] = (weight'),
    ("Jacobi multiplies by the diagonal", METAOPT, "return lambda r: r / scale", "return lambda r: r * scale"),
    ("flexible CG with the standard beta", METAOPT, "beta = (rz_new - z @ r_old) / rz if flexible else rz_new / rz",
     "beta = rz_new / rz"),
    ("relative-residual stop ignored", METAOPT, "if rr < tol or rr <= limit:", "if rr < tol:"),
    ("step length from the residual without the damping", METAOPT, "curvature = direction @ (g - residual)",
     "curvature = direction @ (g - residual) - cfg.cg_damping * direction @ direction"),
    ("adapted-fisher preconditioner without the flexible beta", METAOPT,
     'flexible=cfg.cg_precondition == "adapted-fisher")', "flexible=False)"),
    ("preconditioners from all the curvature's trajectories", CURV, "    fraction = subsample * DIAGONAL_SUBSAMPLE",
     "    fraction = subsample"),
    ("inner solve without the damping", CURV, "product(v) + damping * v, r", "product(v), r"),
]]

# mutmut switches mutants at call time, after the modules are imported, so it cannot measure code that runs
# only at import (here `state()`, the dataclass-field factory of objective state): its 8 mutants, by hand.
_STATE_FIELD = 'dataclasses.field(default=default, metadata={"state": True})'
_STATE_TEST = ["tests/test_objectives.py::test_state_fields_start_at_zero_and_are_not_parameters"]
IMPORT_TIME = [(f"state() mutant {i}", "safemaml/engine/objective.py", text, replacement, _STATE_TEST)
               for i, (text, replacement) in enumerate([
                   ("def state(default: float = 0.0)", "def state(default: float = 1.0)"),
                   (_STATE_FIELD, _STATE_FIELD.replace("default=default", "default=None")),
                   (_STATE_FIELD, _STATE_FIELD.replace('{"state": True}', "None")),
                   (_STATE_FIELD, _STATE_FIELD.replace("default=default, ", "")),
                   (_STATE_FIELD, _STATE_FIELD.replace(', metadata={"state": True}', "")),
                   (_STATE_FIELD, _STATE_FIELD.replace('"state"', '"XXstateXX"')),
                   (_STATE_FIELD, _STATE_FIELD.replace('"state"', '"STATE"')),
                   (_STATE_FIELD, _STATE_FIELD.replace("True", "False")),
               ], start=1)]


def plant(path: str, text: str, replacement: str, tests: list[str]) -> tuple[bool, str]:
    if not Path(path).is_file() or text not in Path(path).read_text():
        return False, f"STALE: {path} has no {text!r} (the code moved or changed; update this bug)"
    source = Path(path).read_text()
    Path(path).write_text(source.replace(text, replacement, 1))
    try:
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                             capture_output=True, text=True, env=env)
    finally:
        Path(path).write_text(source)
    failed = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAILED")]
    return run.returncode != 0, failed[0] if failed else ""


def main() -> int:
    if {"-h", "--help"} & set(sys.argv):
        print(__doc__)
        return 0
    survivors = 0
    bugs = IMPORT_TIME if "--import-time" in sys.argv else BUGS
    if "--only" in sys.argv:
        words = sys.argv[sys.argv.index("--only") + 1]
        bugs = [bug for bug in bugs if words in bug[0]]
    for what, path, text, replacement, tests in bugs:
        killed, by = plant(path, text, replacement, tests)
        survivors += not killed
        print(f"{'KILLED  ' if killed else 'SURVIVED'} {what}: {by}", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
