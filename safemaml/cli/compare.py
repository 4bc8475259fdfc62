"""`safemaml compare` as workers over a storage, and `safemaml compare show DIR`: the command-line face of
safemaml.studies.cells (the storage and the claiming of cells) and safemaml.studies.pool (--workers).

`add_options(p)` adds the flags to compare's parser (cli/main.py); `run` does a checked comparison's work;
`cmd_show` writes the tables of a comparison from its storage alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safemaml.errors import SafeMamlError
from safemaml.runs import compare_request
from safemaml.runs.compare import Comparison

SHOW_FLAGS = {"action", "dir", "storage", "name", "heartbeat", "grace", "quiet"}  # what `compare show` takes


def add_options(p: argparse.ArgumentParser) -> None:
    """compare's storage and worker flags, and the optional `show DIR`."""
    p.add_argument("action", nargs="?", choices=["show"],
                   help="show DIR: write DIR's comparison.md, CSVs and figures from the comparison's storage alone "
                        "(no run folder needed; --storage and --name as the workers had them)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--storage", metavar="URL",
                   help="where the cells (arm, seed) are claimed and their results kept: postgresql://USER@HOST/DB "
                        "for workers on several machines, sqlite:///FILE (default: sqlite:///DIR/comparison.db)")
    p.add_argument("--name", metavar="NAME", help="the comparison's name in the storage (default: the name of DIR)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes, each on its own share of the cores (torch and MuJoCo threads "
                        "= cores / N)")
    p.add_argument("--heartbeat", type=int, default=10, metavar="S", help="seconds between a worker's heartbeats")
    p.add_argument("--grace", type=int, default=30, metavar="S",
                   help="seconds without a heartbeat after which a cell is taken from its worker and retried (<= 60)")


def _name(args: argparse.Namespace, out: Path) -> str:
    return args.name or out.resolve().name


def _say(quiet: bool):
    return None if quiet else (lambda text: print(text, file=sys.stderr, flush=True))


def run(comparison: Comparison, args: argparse.Namespace) -> int:
    """Work through `comparison`'s cells with the storage and workers the flags name; when every cell is
    done, write and print the tables. Every check comes before anything is written."""
    from safemaml.studies import cells, pool

    _quiet_optuna()
    out = Path(args.out)
    pool.shares(args.workers)  # --workers within the cores, before anything is written
    url = args.storage or cells.default_storage(out)
    cells.check_storage(url, args.heartbeat, args.grace)
    name = _name(args, out)
    storage = cells.open_cell_storage(url, args.heartbeat, args.grace) if args.storage else None
    if storage is not None:
        cells.check_request(storage, name, comparison)  # another comparison there: refused before OUT is touched
    compare_request.claim(out, comparison.record())  # refuses an OUT made with another request
    storage = storage or cells.open_cell_storage(url, args.heartbeat, args.grace)
    study, comparison = cells.open_comparison(storage, name, comparison)
    try:
        cells.fail_stale(study)
        cells.queue_missing(study, comparison)
        if args.workers == 1:
            report = cells.work(study, comparison, out, args.quiet, args.heartbeat, _say(args.quiet))
            code = 1 if report.failed else 0
        else:
            code = pool.run(args.workers, cells.pool_worker, {
                "url": url, "name": name, "out": str(out), "quiet": args.quiet, "heartbeat": args.heartbeat,
                "grace": args.grace})
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted; finished cells are kept in the storage and a running one is queued "
                                "again: run the same command to continue") from None
    cells.finish(study, comparison, out, url)
    print((out / "comparison.md").read_text(), end="")
    return code


def cmd_show(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`compare show DIR`: the tables of a comparison from its storage (which cells are done, else)."""
    from safemaml.studies import cells

    _quiet_optuna()
    only_flags(args, parser, SHOW_FLAGS, "compare show takes DIR, --storage and --name")
    if args.dir is None:
        raise SafeMamlError("compare show needs DIR, the folder for the tables")
    out = Path(args.dir)
    if args.storage is None and not (out / "comparison.db").is_file():
        raise SafeMamlError(f"{out} holds no comparison.db; give --storage URL (and --name) of the comparison")
    url = args.storage or cells.default_storage(out)
    study, comparison = cells.open_comparison(cells.open_cell_storage(url, args.heartbeat, args.grace),
                                              _name(args, out), None)
    compare_request.claim(out, comparison.record())  # tables go only into a folder of this comparison
    done = cells.results(study, comparison)
    if len(done) < len(comparison.cells()):
        print(cells.status(study, comparison), file=sys.stderr)
    cells.finish(study, comparison, out, url)
    print((out / "comparison.md").read_text(), end="")
    return 0


def only_flags(args: argparse.Namespace, parser: argparse.ArgumentParser, allowed: set[str], what: str) -> None:
    """Refuse any of compare's flags outside `allowed` (given a value other than its default) in this mode;
    `what` says what the mode takes, e.g. "compare show takes DIR, --storage and --name"."""
    given = sorted(k for k, v in vars(args).items() if k not in allowed and k in _dests(parser)
                   and v != parser.get_default(k))
    if given:
        raise SafeMamlError(f"{what} only, not --{given[0].replace('_', '-')}")


def _quiet_optuna() -> None:
    """Optuna's INFO lines (a study created, ...) say nothing a comparison's user needs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _dests(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in parser._actions}
