"""Command line: `python -m lila_golf <command>` (the same as the `lila-golf` console script).

    python -m lila_golf demo                 # train (smoke preset), pack and score, end to end
    python -m lila_golf train                # the training script, configured by env vars
    python -m lila_golf bundle [--check]     # generate train_gpt.py from the package
    python -m lila_golf data --help          # fetch / tokenize / train-tokenizer / stats
    python -m lila_golf size|record|verify|compare ...   # artifact size and record folders
    python -m lila_golf audit --scorer ngram SHARD       # validity audit of a scorer (C1-C4)
    python -m lila_golf eval RUN_OR_ARTIFACT [--stride 64] [--scorer model+ngram]
    python -m lila_golf generate --artifact A --prompt "..."
    python -m lila_golf preflight            # a record run's inputs and budgets, before paying for it
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command module -> its parser-registering function; modules are imported only when building the parser
COMMANDS = [
    ("lila_golf.tools.demo", "add_demo_parser"),
    ("lila_golf.tools.demo", "add_train_parser"),
    ("lila_golf.tools.bundle", "add_bundle_parser"),
    ("lila_golf.tools.datacmd", "add_data_parser"),
    ("lila_golf.tools.evalcmd", "add_eval_parser"),  # before audit: registers the model scorers
    ("lila_golf.tools.audit", "add_audit_parser"),
    ("lila_golf.tools.records", "add_records_parsers"),
    ("lila_golf.tools.generate", "add_generate_parser"),
    ("lila_golf.tools.preflight", "add_preflight_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lila-golf", description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, adder in COMMANDS:
        module = importlib.import_module(module_name)
        getattr(module, adder)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
