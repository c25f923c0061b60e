"""What the network sees in a photo (issue 24, "The Building Blocks of Interpretability"): the maths of one batch.

For each photo and layer (a catalogued layer or a block output such as `mixed4d`), with `a` the layer's
activations [H, W, C], `b` its baseline [C] (what "absent" means at the layer: zero, or the mean activation per
channel over a reference set of photos, `mean_activations`) and `g_j` the gradient of class j's logit (the main
classifier's, before the softmax: `atlas.model.classifier.logits_node`) with respect to the activations:

- **classes, logits**: the photo's top k classes by logit, best first.
- **spatial attribution** [k, H, W]: per position, sum over channels of (a - b) x g_j (the linear approximation the
  article uses, against a baseline; with `linear=True` the network above the layer is linearised as the circuits
  do, so the product summed over the map is exactly logit(a) - logit(b) at that layer, up to float32 rounding).
- **channel attribution** [k, C]: the same product summed over positions.
- **neuron groups**: scikit-learn's NMF (`init="nndsvda"`, `random_state=seed`) of the positions x channels
  matrix of max(a, 0): a catalogued layer is its pre-ReLU tensor (`mixed4d_3x3_pre_relu`), and a residual sum may
  be negative too, so the factorisation sees the activations as the next ReLU passes them. `group_spatial` [g, H, W]
  x `group_channels` [g, C] approximates that matrix; each group's channel factor has unit L2 norm (its scale is
  in the spatial factor), and groups are ordered by their spatial factor's sum, strongest first. g is `groups`,
  or fewer when the map has fewer positions or channels.
- **group_classes** [g, k]: each group's share of (a - b) x g_j: at every position and channel the product is
  split between the groups in proportion to their parts of the reconstruction (W_i H_i over W H), so the groups'
  attributions add up to the channel attributions' total (where the reconstruction is not zero).
- **dictionary** [H, W, n]: per position, the `top` channels with the largest activation (as they are, before any
  ReLU), strongest first, and their activations.

A model without a Softmax has no classifier: k = 0 (empty class arrays of the right rank), groups and dictionary
still made. `between_layers` gives the attribution between two layers. One forward pass and one persistent tape
(one backward per class) per photo batch serve every layer (`Model.class_gradients_fn`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Iterable

import numpy as np

from atlas.errors import UserError
from atlas.model.classifier import model_logits
from atlas.run.explainfiles import LayerExplanation

if TYPE_CHECKING:
    from atlas.model.graph import Model

NMF_MAX_ITER = 400
JACOBIAN_BYTES = 1 << 25  # per call of `between_layers`' jacobian (its rows: upper positions x the lower tensor)
_CLASSIFIERS: dict[tuple[str, str | None], str | None] = {}  # (model sha256, logits named) -> its logits node


def classifier(model: Model) -> str | None:
    """The model's logits node (`atlas.model.classifier.model_logits`: the one its source names, else the input of
    its final Softmax), read once per graph; None without one."""
    key = (model.sha256, model.source.logits)
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = model_logits(model.source, model.graph_def)
    return _CLASSIFIERS[key]


def explain_batch(model: Model, layers: list[str], pixels: np.ndarray, classes: int = 5, top: int = 6,
                  groups: int = 6, seed: int = 0, linear: bool = False, baselines: dict[str, np.ndarray] | None = None,
                  steps: int = 0) -> list[dict[str, LayerExplanation]]:
    """Per photo of `pixels` (float32 [N, S, S, 3], 0..255, fitted to the input), per layer of `layers` (catalogued
    layers or block outputs, by the names given), its explanation (module docstring): the top `classes` classes (k;
    fewer if the classifier has fewer; 0 without a classifier), the `top` channels per position of the dictionary
    (n), `groups` NMF groups (g) seeded by `seed`, attribution against `baselines` (layer -> [C]; a layer left out,
    or None: zero). With `steps` 0 the gradients are taken at the photo, from one forward pass and one backward per
    class over the batch (the article's linear approximation); with `steps` >= 1 they are integrated along the
    straight path from the baseline to the activations (`path_gradients`), so the attribution adds up to
    logit(a) - logit(b). `linear` takes the gradients through the network above each layer linearised (the
    completeness check), while the classes and logits stay the real network's. `between` is left empty
    (`between_layers`)."""
    pixels = np.asarray(pixels, np.float32)
    layers = list(layers)
    logits = classifier(model)
    n = len(pixels)
    if n == 0:
        return []
    baselines = baselines or {}
    if logits is None or classes <= 0:
        acts = [np.asarray(a) for a in model.layers_fn(layers)(pixels)]
        grads = [np.zeros((n, 0, *a.shape[1:]), np.float32) for a in acts]
        indices, values = np.zeros((n, 0), np.int32), np.zeros((n, 0), np.float32)
    elif steps > 0:
        *acts, scores = (a.numpy() for a in model.layers_fn([*layers, logits])(pixels))
        scores = scores.reshape(n, -1)
        indices = np.argsort(-scores, axis=1, kind="stable")[:, :classes].astype(np.int32)
        values = np.take_along_axis(scores, indices, axis=1).astype(np.float32)
        grads = [path_gradients(model, name, pixels, act, baselines.get(name), indices, steps, linear)
                 for name, act in zip(layers, acts)]
    else:
        top_k, top_logits, act_t, grad_t = model.class_gradients_fn(layers, logits, classes, linear)(pixels)
        indices, values = top_k.numpy().astype(np.int32), top_logits.numpy().astype(np.float32)
        acts, grads = [a.numpy() for a in act_t], [g.numpy() for g in grad_t]
    return [{name: explain_one(name, acts[i][p], grads[i][p], indices[p], values[p], top, groups, seed,
                               baselines.get(name)) for i, name in enumerate(layers)} for p in range(n)]


def path_gradients(model: Model, layer: str, pixels: np.ndarray, act: np.ndarray, baseline: np.ndarray | None,
                   classes: np.ndarray, steps: int, linear: bool = False) -> np.ndarray:
    """[N, k, H, W, C]: integrated gradients' average gradient of each photo's `classes` ([N, k]) logits along the
    straight path from the baseline ([C]; None: zero) to the activations `act` ([N, H, W, C]) at `layer`, by the
    midpoint rule over `steps` steps; times (act - baseline) it adds up to logit(act) - logit(baseline), up to the
    rule's error (docs/explain.md measures it)."""
    gradients = model.path_gradients_fn(layer, classifier(model), classes.shape[1], linear)
    base = np.zeros(act.shape[-1], np.float32) if baseline is None else np.asarray(baseline, np.float32)
    total = np.zeros((len(act), classes.shape[1], *act.shape[1:]), np.float64)
    for step in range(steps):
        value = (base + (step + 0.5) / steps * (act - base)).astype(np.float32)
        total += gradients(pixels, value, classes).numpy()
    return (total / steps).astype(np.float32)


def explain_one(layer: str, act: np.ndarray, grad: np.ndarray, classes: np.ndarray, logits: np.ndarray, top: int,
                groups: int, seed: int, baseline: np.ndarray | None = None) -> LayerExplanation:
    """One photo at one layer from its activations [H, W, C], the class gradients [k, H, W, C] and the layer's
    baseline [C] (None: zero)."""
    height, width, channels = act.shape
    moved = act.astype(np.float64) - (0.0 if baseline is None else np.asarray(baseline, np.float64))
    product = moved[None] * grad.astype(np.float64)  # [k, H, W, C]
    spatial_factor, channel_factor = neuron_groups(act, groups, seed)
    dictionary_channels, dictionary_values = dictionary(act, top)
    return LayerExplanation(
        layer=layer, classes=classes.astype(np.int32), logits=logits.astype(np.float32),
        spatial=product.sum(axis=3).astype(np.float32), channels=product.sum(axis=(1, 2)).astype(np.float32),
        group_spatial=spatial_factor.T.reshape(-1, height, width).astype(np.float32),
        group_channels=channel_factor.astype(np.float32),
        group_classes=group_attribution(spatial_factor, channel_factor,
                                        product.reshape(len(product), height * width, channels)).astype(np.float32),
        dictionary_channels=dictionary_channels, dictionary_values=dictionary_values)


def logits_at(model: Model, layer: str, pixels: np.ndarray, value: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """[N]: each photo's logit of its class in `classes` [N] in the real network with `layer`'s activations
    replaced by `value` (broadcast to them, e.g. a baseline [C]): with `value` the baseline, what integrated
    gradients' attribution adds up to is logit(x) minus this."""
    pixels = np.asarray(pixels, np.float32)
    shape = model.layer_fn(layer)(pixels).shape
    scores = model.patched_fn(layer, (classifier(model),))(pixels, np.broadcast_to(value, shape).astype(np.float32))
    return scores[0].numpy().reshape(len(pixels), -1)[np.arange(len(pixels)), classes]


def mean_activations(model: Model, layers: list[str], batches: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Per layer, its mean activation per channel [C] (float32) over every position of every photo of `batches`
    (float32 [N, S, S, 3], 0..255, fitted to the input): the baseline of a reference set of photos."""
    sums: list[np.ndarray] = []
    counts = np.zeros(len(layers), np.int64)  # positions seen, per layer (each has its own map size)
    for pixels in batches:
        acts = [np.asarray(a, np.float64) for a in model.layers_fn(list(layers))(np.asarray(pixels, np.float32))]
        totals = [a.sum(axis=(0, 1, 2)) for a in acts]
        sums = totals if not sums else [s + t for s, t in zip(sums, totals)]
        counts += [int(np.prod(a.shape[:3])) for a in acts]
    if not sums:
        raise ValueError("mean_activations needs at least one photo")
    return {name: (total / count).astype(np.float32) for name, total, count in zip(layers, sums, counts)}


def neuron_groups(act: np.ndarray, groups: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """NMF of max(act, 0) as positions x channels: (spatial factor [H*W, g], channel factor [g, C]), each channel
    factor of unit L2 norm, strongest group first; zeros when the layer is silent on this photo."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    matrix = np.maximum(act.reshape(-1, act.shape[-1]).astype(np.float32), 0.0)
    g = max(0, min(groups, *matrix.shape))
    if g == 0 or not matrix.max(initial=0.0) > 0:
        return np.zeros((matrix.shape[0], g)), np.zeros((g, matrix.shape[1]))
    nmf = NMF(n_components=g, init="nndsvda", random_state=seed, max_iter=NMF_MAX_ITER)
    # one BLAS thread: on matrices this small, threads only wait on each other (0.15 s against up to 18 s for
    # 196 x 508 on a busy 2-core machine)
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a rough factorisation is still a grouping
        spatial = nmf.fit_transform(matrix).astype(np.float64)
    channel = nmf.components_.astype(np.float64)
    norms = np.linalg.norm(channel, axis=1)
    scale = np.where(norms > 0, norms, 1.0)
    spatial, channel = spatial * scale, channel / scale[:, None]
    order = np.argsort(-spatial.sum(axis=0), kind="stable")
    return spatial[:, order], channel[order]


def group_attribution(spatial: np.ndarray, channel: np.ndarray, product: np.ndarray) -> np.ndarray:
    """[g, k]: each group's share of act x grad (`product` [k, H*W, C]), split by the groups' parts of the
    reconstruction spatial @ channel; positions and channels it leaves at zero belong to no group."""
    reconstruction = spatial @ channel  # [H*W, C]
    ratio = np.divide(product, reconstruction[None], out=np.zeros_like(product), where=reconstruction[None] > 0)
    return np.einsum("pi,ic,jpc->ij", spatial, channel, ratio, optimize=True)


def dictionary(act: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the `top` most active channels, strongest first, and their activations: [H, W, n] each."""
    n = max(0, min(top, act.shape[-1]))
    order = np.argsort(-act, axis=-1, kind="stable")[..., :n]
    return order.astype(np.int32), np.take_along_axis(act, order, axis=-1).astype(np.float32)


def between_layers(model: Model, lower: str, upper: str, pixels: np.ndarray) -> np.ndarray:
    """[N, H, W, h, w]: how much each position of `lower` (h x w) feeds each position of `upper` (H x W): activation
    x gradient of the upper position's summed positive activation, summed over the lower layer's channels.
    Vectorised with a batched jacobian, in chunks of upper positions of at most JACOBIAN_BYTES."""
    if not model.reads(upper, lower) or model.tensor_name(upper) == model.tensor_name(lower):
        raise UserError(f"{upper} does not read {lower}: attribution between layers needs a lower layer below "
                        f"{upper}")
    pixels = np.asarray(pixels, np.float32)
    if len(pixels) == 0:
        return np.zeros((0, 0, 0, 0, 0), np.float32)
    low, up = (tuple(a.shape) for a in model.layers_fn((lower, upper))(pixels[:1]))
    positions = up[1] * up[2]
    chunk = max(1, JACOBIAN_BYTES // (4 * len(pixels) * int(np.prod(low[1:]))))
    between = model.between_fn(lower, upper)
    parts = [between(pixels, np.arange(start, min(start + chunk, positions), dtype=np.int32)).numpy()
             for start in range(0, positions, chunk)]
    return np.concatenate(parts, axis=1).reshape(len(pixels), up[1], up[2], low[1], low[2]).astype(np.float32)
