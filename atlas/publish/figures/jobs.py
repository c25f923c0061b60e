"""Whole figure jobs as plain data: `FigureJob` (one figure of a kind) and `SpecJob` (a spec file). The command
line builds them from its options (`command_job`); Python code builds the same jobs; `draw_job` lays out and
writes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from atlas.atomic import OUTPUT_FLAG, stop_on_write_errors
from atlas.errors import UserError
from atlas.publish.figures.draw import write_combined_pdf, write_figure
from atlas.publish.figures.kinds import CLI_COMMON, KINDS, cli_options
from atlas.publish.figures.page import FigureLayout, output_format
from atlas.publish.figures.spec import FigureSpec, SpecFile, combined_path, figure_path, load_spec
from atlas.run.manifest import Run
from atlas.validation import validate

SPEC = "spec"  # `atlas figure --spec FILE`: not a kind, a file of figures
SPEC_OUTPUT = "set the spec's output: to"  # how a figure spec's figures are written elsewhere


@dataclass(frozen=True)
class FigureJob:
    """One figure of a registered kind: `FigureJob("sheet", {"layer": "mixed4d", "channels": "0-15"})`."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)  # the kind's spec-file keys (see KINDS)
    output: str | Path | None = None  # a .png/.pdf file, relative to the current folder; None: RUN/figures/NAME.png
    dpi: int | None = None  # PNG resolution and PDF image resolution (default 200)


@dataclass(frozen=True)
class SpecJob:
    """Every figure of a spec file (a path or a shipped spec's name)."""

    spec: str | Path
    dpi: int | None = None  # overrides every dpi in the file


@dataclass
class Made:
    """A figure that was written, with its layout (for the gaps) and path."""

    layout: FigureLayout
    path: Path


def layout_figure(run: Run, spec: Any) -> FigureLayout:
    """The layout of a figure of any kind."""
    return KINDS[spec.kind].layout(run, spec)


def make_figures(run: Run, spec_file: SpecFile, dpi: int | None = None,
                 elsewhere: str | None = OUTPUT_FLAG) -> tuple[list[Made], Path | None]:
    """Lay out and write every figure of a spec (and its combined PDF); `dpi` overrides every dpi in it. A folder
    that cannot be written is one line (`stop_on_write_errors`) telling how to write `elsewhere`."""
    layouts = [layout_figure(run, spec) for spec in spec_file.figures]  # every user error before any file
    made = []
    for spec, layout in zip(spec_file.figures, layouts):
        path = figure_path(run, spec, spec_file.format)
        with stop_on_write_errors(path.parent, elsewhere, resumable=False):
            made.append(Made(layout, write_figure(layout, path, dpi or spec.dpi or spec_file.dpi)))
    combined = combined_path(run, spec_file)
    if combined:
        with stop_on_write_errors(combined.parent, elsewhere, resumable=False):
            write_combined_pdf([m.layout for m in made], combined, dpi or spec_file.dpi)
    return made, combined


def job_spec(run: Run, job: FigureJob) -> SpecFile:
    """A figure job as a one-figure spec, named from what it shows; its output resolved from the current folder."""
    data: dict[str, Any] = {"kind": job.kind, **job.options} | ({"dpi": job.dpi} if job.dpi is not None else {})
    if job.output is not None:
        output_format(job.output)
        data["output"] = str(Path(job.output).expanduser().resolve())
    data = {k: v for k, v in data.items() if v is not None}
    spec = validate(FigureSpec, {"name": "figure", **data}, "atlas figure")
    return SpecFile(figures=[spec.model_copy(update={"name": KINDS[spec.kind].file_name(run, spec)})])


def draw_job(run: Run, job: FigureJob | SpecJob) -> tuple[list[Made], Path | None]:
    """Lay out and write a job's figures: what `atlas figure` does short of parsing and printing."""
    if isinstance(job, SpecJob):
        return make_figures(run, load_spec(job.spec), job.dpi, SPEC_OUTPUT)
    return make_figures(run, job_spec(run, job), job.dpi, OUTPUT_FLAG)


def command_job(chosen: str, value: Any, options: Mapping[str, Any], output: str | None = None,
                dpi: int | None = None) -> FigureJob | SpecJob:
    """The job of `atlas figure --CHOSEN VALUE [options]` (`options`: those given, by name); an option that
    belongs to another kind is a one-line user error."""
    given = {k: v for k, v in options.items() if v is not None} | ({"output": output} if output else {})
    allowed = set(KINDS[chosen].cli_options) | set(CLI_COMMON) if chosen in KINDS else set()
    stray = sorted(set(given) - allowed)
    if stray:
        hint = ("set it in the spec file" if chosen == SPEC else f"--{chosen} takes {', '.join(sorted(allowed))}")
        raise UserError(f"--{stray[0]} does not apply to --{chosen} ({hint})")
    if chosen == SPEC:
        return SpecJob(value, dpi)
    given.pop("output", None)
    texts = {name: option.from_text for name, (option, _) in cli_options().items() if option.from_text}
    given = {k: texts[k](v) if k in texts else v for k, v in given.items()}
    return FigureJob(chosen, KINDS[chosen].from_flag(value, given), output, dpi)
