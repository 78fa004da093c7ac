"""Renders the CLI reference (docs/cli.md) from the argparse parser itself."""
from __future__ import annotations

import argparse

__all__ = ["cli_markdown"]


def cli_markdown() -> str:
    from sushi.cli import build_parser
    p = build_parser()
    out = ["# CLI reference", "", "Generated from the parser by `python -m sushi.clidoc > docs/cli.md`; "
           "a test checks it is current.", "", "```", p.format_help().rstrip(), "```", ""]
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        out += [f"## sushi {name}", "", "```", sp.format_help().rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    import os
    os.environ["COLUMNS"] = "100"
    print(cli_markdown(), end="")
