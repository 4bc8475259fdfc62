"""One typed source per option set (issue 26.2): the command-line flags are built from the settings' dataclass
fields, the evaluation request is one dataclass that summary.json's `request` serialises, and the metric names
come from one schema. The expected flags, records and columns below are literals: the command-line contract and
what the code before the change wrote (copied from committed files), not values computed by the code under test.
"""

import dataclasses
import json
import pathlib

import pytest
import tomllib

from safemaml import config as config_io
from safemaml.cli import main as cli
from safemaml.cli import options
from safemaml.config import EvalRequest
from safemaml.measure import schema
from safemaml.runs import compare
from safemaml.runs.evaluate import request_record

ROOT = pathlib.Path(__file__).resolve().parents[1]

# train's flags and the settings they override: the CLI's contract (the former cli.TRAIN_FLAGS)
TRAIN_FLAGS = {"--tasks": "tasks", "--iterations": "iterations", "--seed": "seed", "--device": "device",
               "--meta-batch-size": "meta_batch_size", "--fast-batch-size": "fast_batch_size",
               "--post-batch-size": "post_batch_size", "--fast-lr": "adapt.fast_lr",
               "--first-order": "adapt.first_order", "--meta-optimizer": "meta.name", "--max-kl": "meta.max_kl",
               "--objective": "objective.name", "--beta": "objective.beta", "--delta": "objective.delta",
               "--checkpoint-every": "checkpoint_every", "--init": "init"}
# a value for each, unlike every preset's (True: a flag without a value)
TRAIN_VALUES = {"--tasks": "nav2d", "--iterations": 7, "--seed": 5, "--device": "cpu", "--meta-batch-size": 3,
                "--fast-batch-size": 4, "--post-batch-size": 6, "--fast-lr": 0.07, "--first-order": True,
                "--meta-optimizer": "adam", "--max-kl": 0.02, "--objective": "cvar", "--beta": 0.2,
                "--delta": 0.3, "--checkpoint-every": 2, "--init": "some/run"}
# evaluation flags per command -> EvalRequest field
EVALUATE_FLAGS = {"--grid": "grid", "--sample": "sample", "--task-seed": "task_seed", "--trajectories": "trajectories",
                  "--repeats": "repeats", "--seed": "seed", "--beta": "beta", "--delta": "delta", "--device": "device"}
STUDY_EVAL_FLAGS = {"--grid": "grid", "--sample": "sample", "--task-seed": "task_seed",
                    "--trajectories": "trajectories", "--repeats": "repeats", "--eval-seed": "seed",
                    "--eval-beta": "beta", "--eval-delta": "delta"}
COMPARE_EVAL_FLAGS = {"--trajectories": "trajectories", "--repeats": "repeats", "--eval-seed": "seed"}


def _flags(parser_options):
    return {o.flag: o.key for o in parser_options}


def test_the_flags_are_the_contracts():
    assert _flags(cli.train_options()) == TRAIN_FLAGS
    assert _flags(cli.evaluate_options()) == EVALUATE_FLAGS
    assert _flags(cli.compare_eval_options()) == COMPARE_EVAL_FLAGS
    from safemaml.cli import study

    assert _flags(study._eval_options()) == STUDY_EVAL_FLAGS


def test_each_train_flag_sets_the_setting_it_names(capsys):
    argv = ["train"]
    for flag, value in TRAIN_VALUES.items():
        argv += [flag] if value is True else [flag, str(value)]
    assert cli.main([*argv, "--print-config"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    for flag, key in TRAIN_FLAGS.items():
        section, _, name = key.rpartition(".")
        assert (printed[section] if section else printed)[name] == TRAIN_VALUES[flag], flag
    preset = config_io.preset("nav2d")  # the flags not given keep the preset's values
    assert printed["policy"]["hidden"] == list(preset.policy.hidden) and printed["gamma"] == preset.gamma


def _parse(*argv):
    args, extra = cli.build_parser().parse_known_args(list(argv))
    assert extra == []
    return args


def test_evaluate_flags_make_the_request_and_their_defaults_are_the_requests():
    assert options.eval_request(_parse("evaluate", "RUN"), cli.evaluate_options()) == EvalRequest()
    given = {"--grid": "0:1:0.5", "--sample": "7", "--task-seed": "3", "--trajectories": "5", "--repeats": "9",
             "--seed": "2", "--beta": "0.2", "--delta": "0.3", "--device": "cuda:1"}
    args = _parse("evaluate", "RUN", *[x for item in given.items() for x in item])
    request = options.eval_request(args, cli.evaluate_options())
    assert request == EvalRequest(grid="0:1:0.5", sample=7, task_seed=3, trajectories=5, repeats=9, seed=2,
                                  beta=0.2, delta=0.3, device="cuda:1")
    compared = options.eval_request(_parse("compare", "--out", "x", "--eval-seed", "4", "--repeats", "6"),
                                    cli.compare_eval_options())
    assert compared == EvalRequest(seed=4, repeats=6)


def test_the_study_evaluation_comes_from_the_flags_over_the_studys_defaults(tmp_path):
    from safemaml.cli.study import _settings_from_args

    common = ["study", "run", str(tmp_path), "--trials", "1", "--tasks", "nav2d", "--objective", "cvar"]
    settings = _settings_from_args(_parse(*common))
    assert settings.evaluation == EvalRequest(repeats=1, beta=0.1, delta=0.1)  # the study's defaults, stated once
    settings = _settings_from_args(_parse(*common, "--eval-beta", "0.2", "--eval-seed", "3", "--repeats", "30",
                                          "--sample", "5", "--metric", "violation_rate", "--prune-every", "2"))
    assert settings.evaluation == EvalRequest(sample=5, repeats=30, seed=3, beta=0.2, delta=0.1)
    assert (settings.metric, settings.prune_every, len(settings.seeds)) == ("violation_rate", 2, 3)


# A study stored by the code before EvalRequest (its `evaluation` has no device); the config is cut to its
# first key: the round trip must not depend on it
STORED_SETTINGS = ('{"config": {"tasks": "nav2d"}, "evaluation": {"beta": 0.1, "delta": 0.1, "grid": '
                   '"-0.5:0.5:0.5", "repeats": 1, "sample": null, "seed": 0, "task_seed": 0, "trajectories": 2}, '
                   '"metric": "pareto", "prune_every": 0, "seeds": [0], "space": {"eta": "{\\"name\\": '
                   '\\"FloatDistribution\\", \\"attributes\\": {\\"step\\": null, \\"low\\": 0.5, \\"high\\": 5.0, '
                   '\\"log\\": true}}"}}')


def test_a_stored_study_is_read_and_written_back_byte_for_byte():
    from safemaml.studies.study import StudySettings

    settings = StudySettings.from_json(STORED_SETTINGS)
    assert settings.to_json() == STORED_SETTINGS
    assert settings.evaluation == EvalRequest(grid="-0.5:0.5:0.5", trajectories=2, repeats=1, beta=0.1, delta=0.1)


# summary.json's request as the code before EvalRequest wrote it
# (experiments/results/comparison-halfcheetah-vel/compare/cvar-neutral/seed-0/eval-band/summary.json)
WRITTEN = """  "request": {
    "grid": "0.3:1.1:0.1",
    "sample": null,
    "task_seed": 0,
    "trajectories": 20,
    "repeats": 60,
    "seed": 0,
    "beta": 0.1,
    "delta": 0.1,
    "device": "cpu",
    "version": 1,
    "checkpoint_sha256": "ad33ec715eee21d1246daef5609e037cd3029397fc0a3aae6a3c4e35670619ab"
  }"""


def test_the_request_record_is_what_earlier_evaluations_wrote():
    # what compare asks for with --repeats 60 --band 0.3:1.1:0.1 and the base objective's beta and delta
    request = dataclasses.replace(EvalRequest(repeats=60, beta=0.1, delta=0.1), grid="0.3:1.1:0.1")
    record = request_record(request, "ad33ec715eee21d1246daef5609e037cd3029397fc0a3aae6a3c4e35670619ab")
    text = json.dumps({"request": record}, indent=2)
    assert text == "{\n" + WRITTEN + "\n}"
    assert EvalRequest.from_record(record) == request


def test_every_committed_evaluation_is_recognised():
    paths = sorted((ROOT / "experiments").glob("**/summary.json"))
    records = [json.loads(p.read_text()).get("request") for p in paths]
    assert sum(r is not None for r in records) >= 1
    for path, record in zip(paths, records, strict=True):
        if record is not None:  # written before evaluations recorded their request: never reused
            again = request_record(EvalRequest.from_record(record), record["checkpoint_sha256"])
            assert again == record and list(again) == list(record), path


# the columns as the code before the schema wrote them
# (experiments/results/comparison-halfcheetah-vel/compare/{comparison.csv,cvar/seed-0/metrics.csv})
METRICS_CSV = ("iteration,pre_return,post_return,mean_gamma,cvar_gamma,frac_negative,violation_rate,"
               "certified_fraction,action_std,loss_before,loss_after,kl,grad_norm,ls_steps,accepted,time_sampling,"
               "time_adapt,time_optimize")
COMPARISON_CSV = ("objective,seed,pre_return,post_return,mean_gamma,mean_gamma_ci,cvar_gamma,frac_negative,"
                  "violation_rate,certified_fraction,certified,action_std,min_passing_p,task_wilcoxon_p")
OBJECTIVES_CSV_HEAD = ("objective,seeds,pre_return_mean,post_return_mean,mean_gamma_mean,cvar_gamma_mean,"
                       "frac_negative_mean,violation_rate_mean,certified_fraction_mean,certified_mean,action_std_mean,"
                       "min_passing_p_mean,diff_violation_rate,diff_lo_violation_rate,diff_hi_violation_rate,"
                       "seed_wilcoxon_p_violation_rate,diff_frac_negative")


def test_the_schema_gives_the_columns_the_files_have():
    from safemaml.engine.learner import METRIC_FIELDS
    from safemaml.studies import study

    assert ",".join(METRIC_FIELDS) == ",".join(schema.TRAINING_COLUMNS) == METRICS_CSV
    assert ",".join(compare.COLUMNS) == COMPARISON_CSV
    assert ",".join(compare.OBJECTIVE_COLUMNS).startswith(OBJECTIVES_CSV_HEAD)
    assert study.SEED_KEYS == ("pre_return", "post_return", "mean_gamma", "cvar_gamma", "violation_rate",
                               "certified_fraction", "certified", "action_std")
    assert study.METRICS == {"post_return": "maximize", "violation_rate": "minimize", "mean_gamma": "minimize",
                             "cvar_gamma": "minimize"}
    assert study.METRIC_NAMES == {"post_return": "post-update return", "violation_rate": "violation rate V̂",
                                  "mean_gamma": "mean Γ", "cvar_gamma": "CVaR_δ Γ"}  # stored on Optuna studies
    assert compare.SEED_TESTED == {"violation_rate": "V̂", "frac_negative": "tasks Γ>0", "mean_gamma": "mean Γ",
                                   "post_return": "post", "pre_return": "pre", "action_std": "action std"}


@pytest.mark.parametrize("cls", [config_io.TrainConfig, config_io.PolicyConfig, config_io.AdaptConfig,
                                 config_io.MetaOptConfig, EvalRequest])
def test_every_setting_states_its_meaning(cls):
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type) or field.name in ("policy", "adapt", "meta", "objective"):
            continue  # the tables: their own fields are checked
        option = options.field_option(cls, field.name)
        assert option.help and option.default == field.default, (cls, field.name)
