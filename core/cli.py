"""The ``drirl`` command line: plugins, validate, run and report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from drirl.data_cli import add_data_commands
from drirl.errors import DrirlError
from drirl.eval_command import add_eval_parser

logger = logging.getLogger("drirl")


def _offline_defaults() -> None:
    # Nothing downloads unless the user names a hub model and turns these off.
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _setup_logging(verbose: bool, log_file: Path | None = None) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("drirl").setLevel(level)


def cmd_plugins(args: argparse.Namespace) -> int:
    from drirl.plugin_manager import load_plugins

    plugins = load_plugins(strict=args.strict)
    rows = [
        {"kind": e.kind, "name": e.name, "plugin": e.plugin, "version": e.version}
        for e in plugins.entries()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        for row in rows:
            print(
                f"{row['kind']:<18} {row['name']:<{width}}  {row['plugin']} {row['version']}"
            )
        for failure in plugins.failures:
            print(
                f"FAILED {failure.plugin} ({failure.distribution}) at {failure.stage}: "
                f"{failure.error}"
            )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from drirl.config import load_experiment
    from drirl.plugin_manager import load_plugins

    plugins = load_plugins()
    experiment = load_experiment(args.file, plugins)
    # Reading every category's data now reports a bad dataset row before a run starts.
    categories = {name for cell in experiment.cells for name in cell.categories}
    for name in sorted(categories):
        plugins.get("harm_category", name).load_records()
    print(f"{args.file}: valid, {len(experiment.cells)} cell(s):")
    for cell in experiment.cells:
        settings = ", ".join(f"{k}={v}" for k, v in cell.settings.items()) or "defaults"
        print(f"  {cell.id}: {settings}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from drirl.config import load_experiment
    from drirl.distributed import is_main_process, world_size
    from drirl.pipeline import ExperimentRunner, summary_line
    from drirl.plugin_manager import load_plugins
    from drirl.report import results_document, write_report

    out = Path(args.out).resolve()
    # In a run with several processes the others log warnings only, and only to stderr,
    # so that run.log and the console show each message once.
    main = is_main_process()
    _setup_logging(args.verbose, out / "run.log" if main else None)
    if not main:
        logging.getLogger("drirl").setLevel(logging.WARNING)
    plugins = load_plugins()
    experiment = load_experiment(args.file, plugins)
    logger.info(
        "experiment %s: %d cell(s) into %s", experiment.name, len(experiment.cells), out
    )
    if world_size() > 1:
        logger.info("running on %d processes; process 0 writes the run", world_size())
    runner = ExperimentRunner(
        experiment,
        plugins,
        out,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        show_progress=not args.quiet,
    )
    results = runner.run()
    if not main:
        return 0
    document = results_document(experiment.name, str(args.file), results)
    folder = write_report(out, document)
    print()
    for result in results:
        print(f"{result.id}: {summary_line(result)}")
    print()
    print((folder / "report.md").read_text(encoding="utf-8"))
    print(f"Report written to {folder}/ (report.md, results.csv, results.json)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from drirl.report import rebuild_report

    folder = rebuild_report(Path(args.run_dir))
    print((folder / "report.md").read_text(encoding="utf-8"))
    print(f"Report rebuilt in {folder}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drirl", description="Safety alignment with DR-IRL and its baselines."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    # Each subcommand accepts -v too, so it may come before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log debug messages",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", parents=[common], help="list every loaded component")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.add_argument(
        "--strict", action="store_true", help="fail when a plugin fails to load"
    )
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "validate", parents=[common], help="check an experiment file without running it"
    )
    p.add_argument("file", help="experiment YAML file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "run", parents=[common], help="run an experiment and write its report"
    )
    p.add_argument("file", help="experiment YAML file")
    p.add_argument("--out", required=True, help="run folder (reused to resume)")
    p.add_argument(
        "--cache-dir",
        help="model cache folder (default: $DRIRL_CACHE_DIR or ~/.cache/drirl)",
    )
    p.add_argument("--quiet", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="rebuild the report of a run from its results.json",
    )
    p.add_argument("run_dir", help="run folder given to `drirl run --out`")
    p.set_defaults(func=cmd_report)

    add_eval_parser(sub, common)

    add_data_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``drirl`` command line and return its exit status."""
    _offline_defaults()
    args = build_parser().parse_args(argv)
    if args.command != "run":
        _setup_logging(args.verbose)
    try:
        return args.func(args)
    except DrirlError as exc:
        print(f"drirl: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout (for example `head`) closed it early, which is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("drirl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
