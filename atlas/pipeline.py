"""The pipeline of `atlas run` and `atlas sweep`, as one function the command line and Python both call: the
sweep, then the passes over the run folder (dataset examples, activation maps, explanations, circuits), then the
gallery.

It sits at the top of the package, beside the command line, because it calls every stage: the sweep is the run
stage's, the photo passes are the analysis stage's (above run), the gallery is publish's (above both). Nothing
below imports it (tests/test_layering.py).

    from atlas.pipeline import run_pipeline
    from atlas.run.config import load_config

    loaded = load_config("demo")
    summary = run_pipeline(loaded, loaded.config.load_model())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Out = Callable[[str], Any]  # where the pipeline's lines go (print by default)


class SweepFailed(Exception):
    """Some renders failed: the sweep ends with exit code 1 after its summary."""


@dataclass
class PipelineSummary:
    """What each step of a pipeline did (None: the step did not run: not asked for, or left to an unsliced run)."""

    plan: Any  # atlas.run.plan.RunPlan
    sweep: Any = None  # atlas.run.sweep.Summary
    examples: Any = None  # atlas.analysis.examples.ExamplesSummary
    class_photos: Any = None  # atlas.analysis.class_photos.ClassPhotosSummary
    map: Any = None  # atlas.analysis.maps.MapSummary
    explain: Any = None  # atlas.analysis.explain.ExplainSummary
    circuits: Any = None  # atlas.analysis.circuits.CircuitsSummary
    site: Any = None  # atlas.publish.site's build report
    estimate_seconds: float | None = None  # the dry run's estimate (sweep and map), when dry_run


class _Lines:
    """A file-like object that hands `out` each line printed to it (for the dry run's `print(..., file=)`)."""

    def __init__(self, out: Out) -> None:
        self.out, self.pending = out, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.out(line)
        return len(text)

    def flush(self) -> None:
        pass


def run_pipeline(loaded: Any, model: Any, shard: tuple[int, int] | None = None, gpus: list[int] | None = None,
                 backend: str | None = None, scheduler: str | None = None, examples_folder: str | None = None,
                 map_folder: str | None = None, build_site: bool = True, dry_run: bool = False,
                 out: Out = print, explain_folder: str | None = None) -> PipelineSummary:
    """Resolve the loaded config's plan once (for dask, from the cluster's devices; `backend`, `scheduler`), then
    sweep, find examples, make maps, explain photos (`explain_folder` adds or replaces the config's explain folder),
    compute circuits and, with `build_site`, build the gallery; or with `dry_run` only estimate the sweep's and the
    map's time. Every line goes to `out`. Raises `SweepFailed` (after the sweep's lines) when renders failed, and
    UserError for mistakes a user can fix."""
    from atlas.errors import UserError
    from atlas.run.sweep import plan_and_client

    if scheduler and backend != "dask":
        raise UserError("--scheduler needs --backend dask")
    # the plan once: the sweep, the dry run and the passes take it
    with plan_and_client(loaded, model, shard, gpus, backend, scheduler, examples_folder, map_folder,
                         explain_folder) as (plan, client):
        if dry_run:
            return PipelineSummary(plan, estimate_seconds=estimate_pipeline(plan, model, out))
        summary = PipelineSummary(plan, sweep=sweep_step(plan, model, client, out))
    return run_passes(summary, model, build_site, out)


def run_planned(plan: Any, model: Any, client: Any = None, build_site: bool = True,
                out: Out = print) -> PipelineSummary:
    """The pipeline of an already resolved plan (`atlas.run.plan.resolve_plan`): sweep, passes, gallery."""
    return run_passes(PipelineSummary(plan, sweep=sweep_step(plan, model, client, out)), model, build_site, out)


def estimate_pipeline(plan: Any, model: Any, out: Out = print) -> float:
    """The dry run: the sweep's work and time estimate, and the map pass's if the plan has one; writes nothing."""
    from atlas.run.estimate import estimate

    lines = _Lines(out)
    seconds = estimate(plan, model, lines)
    if plan.map:
        from atlas.analysis.maps import estimate_map

        seconds += estimate_map(plan.map, plan.folder, model, lines)
    if plan.explain:
        from atlas.analysis.explain import photo_entries

        entries, _ = photo_entries(plan.explain.photos)
        out(f"explain: {len(entries):,} photos at {', '.join(plan.explain.layers)} after the sweep (not in the "
            "estimate; docs/explain.md#speed gives seconds per photo)")
    return seconds


def sweep_step(plan: Any, model: Any, client: Any = None, out: Out = print) -> Any:
    """Render what the plan asks for (umap-learn warming up beside it when a map follows); its lines to `out`."""
    from atlas.run.sweep import run_sweep

    if plan.map and not plan.shard:
        from atlas.analysis.maps import warm_umap

        warm_umap(plan.map, plan.folder)  # numba compiles umap-learn's functions while the sweep renders
    return run_sweep(plan, model, client)


def _examples(plan: Any, model: Any) -> Any:
    from atlas.analysis.examples import run_examples

    return run_examples(plan.examples, plan.folder, model)


def _class_photos(plan: Any, model: Any) -> Any:
    from atlas.analysis.class_photos import run_class_photos

    return run_class_photos(plan.class_photos, plan.folder, model)


def _map(plan: Any, model: Any) -> Any:
    from atlas.analysis.maps import run_map

    return run_map(plan.map, plan.folder, model)


def _explain(plan: Any, model: Any) -> Any:
    from atlas.analysis.explain import run_explain

    return run_explain(plan.explain, plan.folder, model)


def _circuits(plan: Any, model: Any) -> Any:
    from atlas.analysis.circuits import run_circuits

    return run_circuits(plan.circuits, plan.folder, model)


# the passes after the sweep, in order: the plan's (and summary's) field, how to run it after a sliced sweep, the run
PASSES: tuple[tuple[str, str, Callable[[Any, Any], Any]], ...] = (
    ("examples", "`atlas examples FOLDER -o {folder}`", _examples),
    ("class_photos", "the sweep without --shard", _class_photos),
    ("map", "`atlas map FOLDER -o {folder}`", _map),
    ("explain", "`atlas explain PHOTO ... -o {folder}`", _explain),
    ("circuits", "the sweep without --shard", _circuits),
)


def run_passes(summary: PipelineSummary, model: Any, build_site: bool = True, out: Out = print) -> PipelineSummary:
    """After the sweep: its lines, then the examples, map, explain and circuits passes (a slice of a sweep leaves
    them to an unsliced run, saying so) and the gallery."""
    plan, swept = summary.plan, summary.sweep
    out("\n".join(swept.lines()))
    out(f"output: {plan.folder}")
    if swept.failed:
        raise SweepFailed(f"{len(swept.failed)} batches failed (listed above); re-run the same command to "
                          "retry them")
    for name, hint, run in PASSES:
        if getattr(plan, name) is None:
            continue
        if plan.shard:
            out(f"{name}: not made by a slice of a sweep; run {hint.format(folder=plan.folder)} once the slices are "
                "done")
            continue
        result = run(plan, model)
        setattr(summary, name, result)
        out("\n".join(result.lines()))
    if build_site:
        from atlas.publish.site import build_site as build

        summary.site = build(plan.folder, progress=True)
        out(summary.site.summary())
    return summary
