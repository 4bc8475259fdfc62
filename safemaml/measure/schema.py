"""The metric schema: every metric safemaml writes, named once, with what it means and which way is better.

metrics.csv's columns (`TRAINING_COLUMNS`), the per-seed attributes of a study's trials (`PER_SEED`), the
metrics a study may optimise (`TARGETS`), the columns of a comparison (`EVALUATION`) and the summary that
`safemaml evaluate` prints all read this table, so a metric added here reaches every one of them that it is
marked for. The order of `SCHEMA` is the order of the columns: metrics.csv is appended to on resume, so a
new metric goes at the end of its group and an existing one never moves. docs/metrics.md explains each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric: its column/key `name`, a one-line `description`, `direction` ("maximize", "minimize" or
    "" where neither is better), a short `label` for tables and a longer `title` for figures and Optuna."""

    name: str
    description: str
    direction: str = ""
    label: str = ""
    title: str = ""
    training: bool = False  # a column of metrics.csv (one row per meta-iteration, the meta-batch's estimate)
    evaluation: bool = False  # a key of an evaluation's summary.json that comparisons tabulate
    per_seed: bool = False  # an attribute of every study trial, per seed and as the mean over seeds
    target: bool = False  # a study may optimise it (`safemaml study run --metric NAME`)

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize", ""):
            raise ValueError(f"metric {self.name}: direction must be maximize, minimize or empty")
        if self.target and not (self.direction and self.per_seed):
            raise ValueError(f"metric {self.name}: a study target needs a direction and per-seed values")


def _measured(name: str, description: str, direction: str, label: str, title: str, *, seed: bool = True,
              target: bool = False) -> Metric:
    """A metric of negative adaptation: in metrics.csv, in every evaluation, per seed in studies."""
    return Metric(name, description, direction, label, title, training=True, evaluation=True, per_seed=seed,
                  target=target)


def _step(name: str, description: str) -> Metric:
    """A number of the meta-optimiser's step or its timing: metrics.csv only."""
    return Metric(name, description, label=name, title=name, training=True)


SCHEMA: tuple[Metric, ...] = (
    _measured("pre_return", "mean return of the pre-update trajectories (policy theta)", "maximize",
              "pre", "pre-update return"),
    _measured("post_return", "mean return of the post-update trajectories (policies theta'_T)", "maximize",
              "post", "post-update return", target=True),
    _measured("mean_gamma", "mean over tasks of Gamma_T = mean pre return - mean post return", "minimize",
              "mean Γ", "mean Γ", target=True),
    _measured("cvar_gamma", "CVaR_delta of Gamma_T over tasks (the mean of the worst delta-fraction)", "minimize",
              "CVaR_δ Γ", "CVaR_δ Γ", target=True),
    _measured("frac_negative", "fraction of tasks with Gamma_T > 0", "minimize", "tasks Γ>0", "tasks with Γ > 0",
              seed=False),
    _measured("violation_rate", "V-hat: fraction of tasks whose p-hat_T < 1 - beta", "minimize", "V̂",
              "violation rate V̂", target=True),
    _measured("certified_fraction", "lower confidence bound on the fraction of tasks with Pr(Gamma_T <= 0) >= "
              "1 - beta (two-level Clopper-Pearson)", "maximize", "certified fraction", "certified fraction"),
    Metric("certified", "whether certified_fraction >= 1 - delta: Eq. 6 holds at the stated confidence",
           "maximize", "certified", "certified", evaluation=True, per_seed=True),
    _measured("action_std", "mean standard deviation of the policy's actions (of theta)", "", "action std",
              "action std"),
    Metric("min_passing_p", "the per-task test's power: the smallest p_T that passes with probability >= 0.8",
           "", "min passing p", "min passing p_T", evaluation=True),
    _step("loss_before", "the objective's meta-loss at theta before the step"),
    _step("loss_after", "the meta-loss at the accepted candidate (TRPO; NaN for Adam)"),
    _step("kl", "mean KL of the accepted step (TRPO; NaN for Adam)"),
    _step("grad_norm", "Euclidean norm of the meta-gradient at theta"),
    _step("ls_steps", "line-search candidates tried (TRPO)"),
    _step("accepted", "1 when the step changed theta, 0 when the line search rejected every candidate"),
    _step("time_sampling", "seconds spent sampling pre- and post-update trajectories"),
    _step("time_adapt", "seconds spent in the inner adaptation step(s)"),
    _step("time_optimize", "seconds in the meta-optimiser (meta-gradient, curvature, line search)"),
)

METRICS: dict[str, Metric] = {m.name: m for m in SCHEMA}

# metrics.csv: the iteration, then every training metric (the objective's own `objective_*` columns follow)
TRAINING_COLUMNS: tuple[str, ...] = ("iteration", *(m.name for m in SCHEMA if m.training))
EVALUATION: tuple[str, ...] = tuple(m.name for m in SCHEMA if m.evaluation)
PER_SEED: tuple[str, ...] = tuple(m.name for m in SCHEMA if m.per_seed)
TARGETS: tuple[str, ...] = tuple(m.name for m in SCHEMA if m.target)
# the certificate, in the order it is read: the per-task test's power, the bound, the verdict
CERTIFICATE: tuple[str, ...] = ("min_passing_p", "certified_fraction", "certified")

