"""The sweep's dry run: the work a config asks for, with a time estimate from a measured step of each layer.

A step of each method the run uses is measured at 224 px on every layer; each mode's renders cost that step times
their 224 px image-steps (the render stage's cost model, `atlas.render.cost`). Beside it, each layer's step FLOPs,
counted from the model's own graph (`atlas.model.flops`), so two models' work can be compared without timing.

Class visualisations (the layer `class`) are timed by a step of the deepest catalogued layer (the logits are one
matmul above the network's last convolutions) at the classifier's input size: every step of theirs sees the image
resized to it (`atlas.model.graph.CLASSIFIER_PX`), whatever the render size."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from atlas.render.cost import measure_step, measured_batch, noise_cost, photo_cost
from atlas.render.settings import clamp_work
from atlas.run.config import LoadedConfig
from atlas.run.manifest import CLASS_LAYER
from atlas.run.plan import RunPlan, WorkItem, make_batches, parse_shard, pending, resolve_plan


def estimate(plan: RunPlan, model: Any, out: Any = None) -> float:
    """Print the work per layer (to `out`, else the stdout of the moment of the call) with a time estimate from
    a measured step of each layer; returns seconds."""
    out = sys.stdout if out is None else out
    from tqdm import tqdm

    from atlas.images import load_photo
    from atlas.model.graph import CLASSIFIER_PX
    from atlas.render.devices import configure_tensorflow
    from atlas.render.loop import cap_photo_side

    configure_tensorflow(None)  # on a GPU, measure with memory growth on, like a worker
    settings = plan.settings
    costs = {mode.id: noise_cost(plan.settings_for(mode.id)) for mode in plan.modes if mode.kind != "photo"}
    methods = {mode.id: plan.settings_for(mode.id).method for mode in plan.modes}
    for mode, path in plan.photos.items():
        h, w = cap_photo_side(load_photo(path), settings.photo_size).shape[:2]
        costs[mode] = photo_cost(h, w, settings)
    class_costs = {mode: noise_cost(replace(plan.settings_for(mode), size=CLASSIFIER_PX))
                   for mode in (plan.classes.modes if plan.classes else ())}

    def cost(item: WorkItem) -> float:
        return class_costs[item.mode] if item.layer == CLASS_LAYER else costs[item.mode]
    todo = pending(plan)
    batch_size = plan.layout.batch_size(settings.size ** 2)
    batches = make_batches(todo, batch_size)
    per_layer: dict[str, list[WorkItem]] = {}
    for item in todo:
        per_layer.setdefault(item.layer, []).append(item)
    total = 0.0
    print(f"atlas: {plan.layout.describe()}", file=out)
    print(f"atlas: {describe_batches(plan, batch_size)}", file=out)
    print(f"{'layer':<40} {'to do':>6} {'GFLOP':>7} {'s/step':>7} {'estimate':>9}", file=out)
    for layer, items in tqdm(per_layer.items(), desc="measuring", unit="layer", disable=None, file=sys.stderr):
        seconds, shown = 0.0, []
        for method in sorted({methods[item.mode] for item in items}):
            mine = [item for item in items if methods[item.mode] == method]
            measured = measured_batch(min(batch_size, len(mine)), settings.size)
            timed = model.layers[-1].name if layer == CLASS_LAYER else layer  # see the module's docstring
            step, compile_seconds = measure_step(model, timed, measured, settings.resolved_precision(), method=method)
            seconds += sum(step * cost(item) for item in mine) + compile_seconds
            shown.append(f"{step * 1000:>5.1f}ms")
        total += seconds
        gflop = layer_step_flops(model, plan.node(layer)) / 1e9
        print(f"{layer:<40} {len(items):>6} {gflop:>7.3f} {' '.join(shown):>7} {seconds / 60:>7.1f}min", file=out)
    shard = f" (shard {plan.shard[0]}/{plan.shard[1]})" if plan.shard else ""
    gpu_workers = 0 if plan.layout.remote else len(plan.layout.gpus)
    if gpu_workers > 1:  # measured on one of them; the others are assumed alike
        total /= gpu_workers
    where = f"{gpu_workers} GPU workers" if gpu_workers > 1 else "this machine"
    if plan.layout.remote:
        where += f" (measured here: the dask cluster's {len(plan.layout.workers)} workers were not timed)"
    print(f"{len(plan.items)} renders in this config{shard}, {len(plan.items) - len(todo)} already done, "
          f"{len(todo)} to do in {len(batches)} batches of up to {batch_size}; estimated "
          f"{format_duration(total)} on {where}", file=out)
    if plan.circuits:
        layers = plan.circuits.layers or [layer.name for layer in model.layers]
        print(f"then circuits: {len(layers)} layers, top {plan.circuits.top} (not timed; the whole full-width network "
              "took about 2 min on 2 CPU cores, see docs/circuits.md)", file=out)
    return total


def describe_batches(plan: RunPlan, batch_size: int) -> str:
    """`batches of 32 images of 224 px (automatic: the model's forward pass is 0.016x GoogLeNet's work per image,
    taken as 0.25)`, or the config's batch size."""
    size = plan.settings.size
    if plan.settings.batch_size:
        return f"batches of {batch_size} images of {size} px (batch_size in the config)"
    work = plan.layout.work
    taken = f", taken as {clamp_work(work):g}" if clamp_work(work) != work else ""
    return (f"batches of {batch_size} images of {size} px (automatic: the model's forward pass is {work:g}x "
            f"GoogLeNet's work per image{taken})")


def layer_step_flops(model: Any, layer: str) -> int:
    """The model's own work for one 224 px image-step of `layer` (forward and input gradient; atlas.model.flops
    counts convolutions, depthwise ones included, and matmuls): the dry run prints it beside the measured step."""
    from atlas.model.flops import step_flops

    return step_flops(model.graph_def, model.tensor_name(layer), 224, 224, model.input)


def format_duration(seconds: float) -> str:
    """`1 h 23 min`, `4.2 min` or `12 s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def dry_run(loaded: LoadedConfig, shard: str | None = None, out: Any = None,
            gpus: list[int] | None = None) -> float:
    """What a sweep would do on the workers and devices it would use, and how long it would take; writes
    nothing. With GPUs, the step is measured on the first GPU visible to this process."""
    model = loaded.config.load_model()
    return estimate(resolve_plan(loaded, model, parse_shard(shard), gpus), model, out)
