"""The ``drirl data`` commands: ``build`` demonstrations and ``compare`` builds.

This module imports nothing heavy at the top, because the parser is built on every
``drirl`` call.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from drirl.errors import ConfigError

TEMPLATE_NAMES = ("cod", "cot")


def _split_names(values: list[str]) -> list[str]:
    """Accept names as separate arguments, comma-separated, or both."""
    return [
        name.strip() for value in values for name in value.split(",") if name.strip()
    ]


def _generator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge --generator-settings FILE with the --set KEY=VALUE options (which win)."""
    import yaml

    values: dict[str, Any] = {}
    if args.generator_settings:
        path = Path(args.generator_settings)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"cannot read generator settings: {exc}", file=path
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError("must be a mapping of setting names to values", file=path)
        values.update(loaded)
    for item in args.set or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                "expected KEY=VALUE",
                field="--set",
                value=item,
                allowed=["max_new_tokens=48"],
            )
        # YAML parsing turns "48" into an int and "true" into a bool.
        values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return values


def cmd_data_build(args: argparse.Namespace) -> int:
    from drirl.atomic import write_text_atomic
    from drirl.data_build import BuildSettings, build_dataset
    from drirl.data_report import compare_builds
    from drirl.errors import DrirlError
    from drirl.plugin_manager import load_plugins
    from drirl.settings import build_settings

    plugins = load_plugins()
    templates = _split_names(args.template)
    unknown = [t for t in templates if t not in TEMPLATE_NAMES]
    if unknown or not templates or len(set(templates)) != len(templates):
        raise DrirlError(
            f"--template {','.join(args.template)} is invalid; allowed: cod, cot or cod,cot"
        )
    category_registry = plugins.registry("harm_category")
    categories = [category_registry.get(n) for n in _split_names(args.categories)]
    generator_cls = plugins.get("generator", args.generator)
    generator_settings = build_settings(
        generator_cls.Settings,
        _generator_settings(args),
        file=args.generator_settings,
        field="generator.settings",
        component=f"generator {args.generator!r}",
    )
    generator = generator_cls(generator_settings)
    judge = plugins.get("judge", args.judge)()

    out = Path(args.out)
    folders = []
    for template in templates:
        folder = out / template if len(templates) > 1 else out
        settings = BuildSettings(
            categories=tuple(c.name for c in categories),
            out_dir=folder,
            template=template,
            sources=tuple(_split_names(args.source)),
            per_category=args.per_category,
            top_up=args.top_up,
            judge=args.judge,
        )
        summary = build_dataset(
            settings,
            categories,
            category_registry.names(),
            generator,
            judge,
            show_progress=not args.quiet,
        )
        folders.append(folder)
        kept = summary.per_category * len(summary.categories)
        print(
            f"{template}: {kept} demonstration(s), {summary.per_category} per category, "
            f"in {folder / 'dataset.jsonl'}"
        )
        for outcome in summary.short_categories:
            print(
                f"  short: {outcome.name} has {outcome.refusals} demonstration(s) that "
                f"end in a refusal, {outcome.needed} needed"
            )
        if summary.sources.duplicates:
            print(f"  duplicate prompts dropped: {len(summary.sources.duplicates)}")
    if len(folders) > 1:
        table = compare_builds(folders)
        write_text_atomic(out / "compare.md", table)
        print()
        print(table)
    return 0


def cmd_data_compare(args: argparse.Namespace) -> int:
    from drirl.data_report import compare_builds

    table = compare_builds([Path(d) for d in args.build_dirs])
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    print(table)
    return 0


def add_data_commands(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """Add ``drirl data build`` and ``drirl data compare`` to the command line."""
    data = sub.add_parser("data", parents=[common], help="build demonstration datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    p = data_sub.add_parser(
        "build",
        parents=[common],
        help="write a CoD or CoT demonstration for each harmful prompt, balanced",
    )
    p.add_argument(
        "--categories",
        nargs="+",
        required=True,
        help="harm categories (names or a,b,c)",
    )
    p.add_argument(
        "--generator", default="local_hf", help="generator plugin (default: local_hf)"
    )
    p.add_argument(
        "--template",
        nargs="+",
        default=["cod"],
        help="cod, cot, or cod,cot to build both into OUT/cod and OUT/cot and compare them",
    )
    p.add_argument("--out", required=True, help="output folder (reused to resume)")
    p.add_argument(
        "--source",
        nargs="+",
        default=["package"],
        help="`package` (the categories' own prompts) and/or JSONL or CSV prompt files",
    )
    p.add_argument(
        "--per-category",
        type=int,
        help="demonstrations per category (default: the smallest category's prompt count)",
    )
    p.add_argument(
        "--top-up",
        action="store_true",
        help="replace a demonstration that does not end in a refusal with one for the "
        "category's next prompt",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a generator setting, e.g. --set max_new_tokens=128 (repeatable)",
    )
    p.add_argument("--generator-settings", help="YAML file of generator settings")
    p.add_argument(
        "--judge",
        default="refusal_phrases",
        help="judge that checks each demonstration ends in a refusal",
    )
    p.add_argument("--quiet", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_data_build)

    p = data_sub.add_parser(
        "compare",
        parents=[common],
        help="compare tokens, time and refusal share of two or more builds",
    )
    p.add_argument(
        "build_dirs", nargs="+", help="folders written by `drirl data build`"
    )
    p.add_argument("--out", help="also write the Markdown table to this file")
    p.set_defaults(func=cmd_data_compare)
