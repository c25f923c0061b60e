"""The render stage's plain settings, and the run stage's config and plan, import no TensorFlow."""

import subprocess
import sys

import pytest

TF_FREE = ["atlas.render.settings", "atlas.render.chain", "atlas.render.cost", "atlas.run.config", "atlas.run.plan"]


@pytest.mark.parametrize("module", TF_FREE)
def test_settings_modules_import_no_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


# Published FLOPs of a full forward pass at 224 px (2 per multiply-add, convolutions): VGG16's 13 convs 30.7 G,
# MobileNetV2's 0.60 G. GoogLeNet's own is counted from the stand-in (GOOGLENET_FLOPS, about 3 G).
VGG16_FLOPS, MOBILENET_V2_FLOPS = 30.7e9, 0.60e9


def test_automatic_batches_divide_by_the_models_work_within_bounds():
    """A model with k times GoogLeNet's work per image starts with 1/k of its images per pass (on a CPU and on a
    GPU), within WORK_RANGE: VGG16 gets the fewest, MobileNetV2 the most; GoogLeNet's (work 1) are as before."""
    from atlas.model.flops import GOOGLENET_FLOPS, relative_work
    from atlas.render.devices import GIB, Device
    from atlas.render.settings import WORK_RANGE, auto_batch_size

    cpu, card = Device("cpu", 0, "CPU", 24 * GIB, cores=2), Device("gpu", 0, "A100", 15 * GIB, (8, 0))
    vgg, mobile = relative_work(int(VGG16_FLOPS)), relative_work(int(MOBILENET_V2_FLOPS))
    assert relative_work(GOOGLENET_FLOPS) == 1.0 and vgg > WORK_RANGE[1] and mobile <= WORK_RANGE[0]
    for device, googlenet in ((cpu, 8), (card, 64)):
        assert auto_batch_size(224 * 224, device) == auto_batch_size(224 * 224, device, 1.0) == googlenet
        heavy, light = auto_batch_size(224 * 224, device, vgg), auto_batch_size(224 * 224, device, mobile)
        assert heavy == max(1, int(googlenet / WORK_RANGE[1])) and light == int(googlenet / WORK_RANGE[0])
        assert heavy < googlenet < light
        assert auto_batch_size(224 * 224, device, 2.0) == googlenet // 2  # within the range: exactly 1/work
        assert auto_batch_size(112 * 112, device, 2.0) == 4 * googlenet // 2  # and by image area, as before


def test_googlenet_keeps_its_batch_sizes_and_hashes(full_model, tmp_path):
    """The stand-in at scale 1 has inception5h's exact shapes: its full pass is GOOGLENET_FLOPS, its work 1.0, so
    its plan batches 8 images of 224 px on a CPU as before; the work never enters a settings hash."""
    from dataclasses import replace

    import yaml

    from atlas.model.flops import GOOGLENET_FLOPS, full_pass_flops
    from atlas.render import devices
    from atlas.render.settings import auto_batch_size
    from atlas.run.config import load_config
    from atlas.run.plan import resolve_plan

    tensors = [layer.tensor for layer in full_model.layers]
    assert full_pass_flops(full_model.graph_def, tensors, full_model.input) == GOOGLENET_FLOPS
    assert full_model.work == 1.0
    path = tmp_path / "googlenet.yaml"
    path.write_text(yaml.safe_dump({"model": "synthetic", "layers": ["mixed4c_3x3_pre_relu"], "channels": 4,
                                    "workers": 1, "output": str(tmp_path / "output")}))
    loaded = load_config(path)
    plan = resolve_plan(loaded, full_model)
    cpu = next(d for d in devices.discover_devices() if not d.is_gpu)
    if not any(d.is_gpu for d in devices.discover_devices()):
        assert plan.layout.batch_size(224 * 224) == auto_batch_size(224 * 224, cpu) == 8
    heavier = replace(full_model, _work=[3.0])  # the same graph counted as three times the work
    other = resolve_plan(loaded, heavier)
    assert other.hashes == plan.hashes and other.settings.pixel_hash() == plan.settings.pixel_hash()
    assert other.layout.batch_size(224 * 224) == max(1, plan.layout.batch_size(224 * 224) // 3)
