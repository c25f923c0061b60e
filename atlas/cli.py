"""The `atlas` command line: one subcommand per user task; user errors end as one line and exit code 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Sequence

from atlas.errors import UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="inception5h (default, or $ATLAS_MODEL), synthetic[:SCALE], or a .pb/.zip path")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="atlas", description="Render and browse a DeepDream atlas of GoogLeNet.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    layers = sub.add_parser("layers", help="list the model's convolutional layers, low to high")
    _model_arg(layers)
    layers.add_argument("--format", choices=["table", "json", "csv"], default="table")
    build = sub.add_parser("build", help="build the static gallery of a run folder into RUN_FOLDER/site/")
    build.add_argument("run_folder", metavar="RUN_FOLDER")
    serve = sub.add_parser("serve", help="preview a run's gallery on http://127.0.0.1:PORT (builds it if missing)")
    serve.add_argument("run_folder", metavar="RUN_FOLDER")
    serve.add_argument("--port", type=int, default=8000)
    return parser


LAYER_COLUMNS = ["index", "name", "block", "channels", "kernel", "stride", "in_channels", "depth",
                 "receptive_field", "cumulative_stride"]


def format_layers(layers: list, fmt: str) -> str:
    """Render the catalogue as a table, JSON or CSV."""
    if fmt == "json":
        return json.dumps({"layers": [layer.to_dict() for layer in layers], "total_layers": len(layers),
                           "total_channels": sum(layer.channels for layer in layers)}, indent=2)
    rows = [[getattr(layer, column) for column in LAYER_COLUMNS] for layer in layers]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LAYER_COLUMNS)
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    headers = ["#", "layer", "block", "channels", "kernel", "stride", "in", "depth", "rf px", "jump px"]
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) if i in (1, 2) else cell.rjust(w) for i, (cell, w) in
                       enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{len(layers)} layers, {sum(layer.channels for layer in layers):,} channels")
    return "\n".join(lines)


def cmd_layers(args: argparse.Namespace) -> None:
    from atlas.model import load_model

    model = load_model(args.model)
    print(format_layers(model.layers, args.format))


def cmd_build(args: argparse.Namespace) -> None:
    from atlas.site import build_site

    print(build_site(args.run_folder, progress=True).summary())


def cmd_serve(args: argparse.Namespace) -> None:
    from atlas.site import serve

    serve(args.run_folder, args.port)


COMMANDS = {"layers": cmd_layers, "build": cmd_build, "serve": cmd_serve}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except UserError as exc:
        print(f"atlas: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("atlas: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
