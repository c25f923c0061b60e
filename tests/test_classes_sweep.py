"""Class visualisations in a sweep: `classes:` resolved once against the model's labels, rendered in every
noise-started mode as work items of the layer `class` (resumable like channels), their raw pixels (visstd) and
MACO's masks kept beside, the gallery's Classes section and the class figure; on Lite0, the shipped photos the
classifier scores highest for a class."""

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from atlas.cli import main
from atlas.errors import UserError
from atlas.run.config import load_config
from atlas.run.manifest import read_run
from atlas.run.sweep import sweep

STAND_IN_CLASSES = 1008  # the stand-in's classifier (GoogLeNet's 1008 logits)
PICKED = ["thing 7", 3, "Thing_12"]  # a label, an index, a label written otherwise


def write_labels(folder: Path) -> Path:
    """A label file naming each of the stand-in's classes `thing N`."""
    path = folder / "labels.txt"
    path.write_text("".join(f"thing {i}\n" for i in range(STAND_IN_CLASSES)))
    return path


def write_config(folder: Path, **changes) -> Path:
    config = {"model": {"path": "synthetic:0.125", "labels": str(write_labels(folder))},
              "layers": ["conv2d0_pre_relu"], "channels": 1, "classes": PICKED, "modes": ["noise", "fourier"],
              "workers": 1, "circuits": False, "output": str(folder / "output"),
              "render": {"octaves": 1, "steps": 2, "size": 48, "display": "visstd"}, "fourier": {"steps": 3},
              "formats": {"web": {"size": 48}, "thumb": {"size": 24}}, **changes}
    path = folder / "classes.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in config.items() if value is not None}))  # None: out
    return path


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A stand-in sweep of one channel and three classes in two noise-started modes (DeepDream with visstd: raw
    pixels kept; Fourier), then its gallery."""
    from atlas.publish.site import build_site

    folder = tmp_path_factory.mktemp("classes")
    loaded = load_config(write_config(folder))
    summary = sweep(loaded)
    build_site(loaded.run_folder)
    return loaded, summary


@pytest.fixture(scope="module")
def maco_run(tmp_path_factory):
    """The same with `render.method: maco` alone (the run's one mode `maco`, whose renders keep their importance
    masks), then its gallery."""
    from atlas.publish.site import build_site

    folder = tmp_path_factory.mktemp("maco")
    loaded = load_config(write_config(folder, modes=None, fourier=None,
                                      render={"method": "maco", "steps": 3, "size": 48}))
    summary = sweep(loaded)
    build_site(loaded.run_folder)
    return loaded, summary


def test_classes_are_resolved_once_rendered_in_each_noise_mode_and_recorded(class_run):
    loaded, summary = class_run
    assert (summary.done, summary.failed) == (2 * (1 + 3), [])  # modes x (the channel + the classes)
    run = read_run(loaded.run_folder)
    assert [(c.index, c.label) for c in run.classes] == [(7, "thing 7"), (3, "thing 3"), (12, "thing 12")]
    assert run.class_count == STAND_IN_CLASSES
    info = json.loads((loaded.run_folder / "run.json").read_text())
    assert info["classes"]["modes"] == ["noise", "fourier"] and info["classes"]["logits"]
    assert "class" not in info["planned"]["noise"]  # classes are not a layer's channels
    renders = {r.key: r for r in run.renders}
    for mode in ("noise", "fourier"):
        for index in (3, 7, 12):
            render = renders[(mode, "class", index)]
            assert render.image == f"images/{mode}/class/{index:04d}.png"
            assert 1 <= render.rank <= STAND_IN_CLASSES
            for path in (render.image, render.web, render.thumb):
                with Image.open(loaded.run_folder / path) as image:
                    image.load()
    # beside every render of DeepDream's noise mode under visstd: its raw pixels (Fourier keeps nothing beside)
    for render in run.renders:
        assert (render.mask, render.raw) == ("", f"{render.image[:-4]}-raw.png" if render.mode == "noise" else "")
        if render.raw:
            with Image.open(loaded.run_folder / render.raw) as image:
                assert image.size == (48, 48) and image.mode == "RGB"
    noise_hashes = {r.settings_hash for r in run.renders if r.mode == "noise"}
    assert len(noise_hashes) == 2  # the channel's and the classes' (another objective)


def test_maco_renders_keep_their_masks_beside_them(maco_run):
    loaded, summary = maco_run
    assert (summary.done, summary.failed) == (1 + 3, [])
    run = read_run(loaded.run_folder)
    assert [m.id for m in run.modes] == ["maco"] and {r.mode for r in run.renders} == {"maco"}
    for render in run.renders:
        assert (render.mask, render.raw) == (f"{render.image[:-4]}-mask.png", "")
        with Image.open(loaded.run_folder / render.mask) as image:
            assert image.size == (48, 48) and image.mode == "L"
    page = (loaded.run_folder / "site" / "classes" / "0007.html").read_text()
    masks = re.findall(r'<img class="mask-overlay" src="([^"]+)"', page)
    assert masks == ["../../images/maco/class/0007-mask.png"] and 'class="mask-toggle"' in page
    assert (loaded.run_folder / "site" / "classes" / masks[0]).resolve().is_file()
    channel = (loaded.run_folder / "site" / "channels" / "conv2d0_pre_relu" / "0000.html").read_text()
    assert channel.count('class="mask-overlay"') == 1


def test_class_renders_resume_like_channels(class_run, tmp_path):
    loaded, _ = class_run
    assert sweep(loaded).done == 0
    run = read_run(loaded.run_folder)
    lost = next(r for r in run.renders if r.key == ("fourier", "class", 12))
    (loaded.run_folder / lost.thumb).unlink()
    assert sweep(loaded).done == 1
    more = load_config(write_config(loaded.path.parent, classes=[*PICKED, "thing 20"]))
    again = sweep(more)
    assert again.done == 2 and again.skipped == 8  # the new class in both modes; nothing else
    sweep(load_config(write_config(loaded.path.parent)))  # back as it was, for the other tests of the module


def test_the_gallery_has_a_classes_section_with_labels_and_the_raw_pixels(class_run):
    loaded, _ = class_run
    site = loaded.run_folder / "site"
    index = (site / "index.html").read_text()
    assert 'href="classes.html"' in index and 'id="classes"' in index
    overview = (site / "classes.html").read_text()
    assert [label for label in re.findall(r'class="class-label">([^<]+)<', overview)] == \
        ["thing 7", "thing 3", "thing 12"]
    page = (site / "classes" / "0007.html").read_text()
    assert "thing 7" in page and "class 7" in page and "of the classifier's 1,008" in page
    assert "mask-overlay" not in page and "mask-toggle" not in page  # neither DeepDream nor Fourier keeps one
    raws = re.findall(r'class="raw-link" href="([^"]+)"', page)
    assert raws == ["../../images/noise/class/0007-raw.png"]
    assert (site / "classes" / raws[0]).resolve().is_file()
    assert 'rel="next"' in page and "classes/0003.html" in page  # the next class, in the order asked
    channel = (site / "channels" / "conv2d0_pre_relu" / "0000.html").read_text()
    assert channel.count('class="raw-link"') == 1


def test_the_class_figure_labels_each_class(class_run):
    from atlas.publish.figures.grids import class_layout
    from atlas.publish.figures.spec import FigureSpec

    loaded, _ = class_run
    run = read_run(loaded.run_folder)
    layout = class_layout(run, FigureSpec(name="c", kind="class", names="thing 12, 7"))  # the first noise mode
    assert [(p.label, p.key) for p in layout.panels] == [("thing 12 · 12", ("noise", "class", 12)),
                                                         ("thing 7 · 7", ("noise", "class", 7))]
    assert all(p.image and p.image.is_file() for p in layout.panels)
    fourier = class_layout(run, FigureSpec(name="c", kind="class", mode="fourier"))
    assert len(fourier.panels) == 3 and {p.key[0] for p in fourier.panels} == {"fourier"}
    with pytest.raises(UserError, match="renders no class 'thing 99'"):
        class_layout(run, FigureSpec(name="c", kind="class", names="thing 99"))


@pytest.mark.parametrize("classes, message", [
    (["thing 7", "thng 8"], "classes: thng 8: no class of that name; did you mean thing 8"),
    ([5000], "classes: 5000: the classifier has 1008 classes (0-1007)"),
])
def test_a_class_name_error_is_one_line(tmp_path, capsys, classes, message):
    path = write_config(tmp_path, classes=classes)
    with pytest.raises(UserError) as caught:
        sweep(load_config(path))
    assert str(caught.value).startswith(message)
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "output").exists()


def test_classes_need_a_noise_started_mode(tmp_path):
    path = write_config(tmp_path, modes=["photo"], photos=["chelsea"], fourier=None)
    with pytest.raises(UserError, match="classes: class visualisations start from noise"):
        sweep(load_config(path))


def test_auto_is_deepdream_on_the_stand_in_and_keeps_its_hashes(tmp_path):
    """`render.method` and `display` default to auto: on the stand-in (random weights) DeepDream's raw pixels, so a
    config written before auto has the same settings hash as one naming deepdream and raw."""
    from atlas.model.graph import load_model
    from atlas.run.plan import resolve_plan

    model = load_model("synthetic:0.125")
    base = {"model": "synthetic:0.125", "layers": ["conv2d0_pre_relu"], "channels": 1, "workers": 1}
    plans = []
    for render in ({}, {"method": "deepdream", "display": "raw"}):
        path = tmp_path / f"c{len(plans)}.yaml"
        path.write_text(yaml.safe_dump({**base, "render": render, "output": str(tmp_path / "out")}))
        plans.append(resolve_plan(load_config(path), model))
    assert plans[0].hashes == plans[1].hashes and [m.id for m in plans[0].modes] == ["noise"]
    assert plans[0].settings.method == "deepdream" and plans[0].settings.display == "raw"


def test_auto_on_a_trained_network_is_fourier_unless_modes_are_listed(tmp_path):
    """The resolution itself is plain data: a trained network without `modes:` gets the fourier mode, one listing
    modes gets DeepDream with visstd on its noise mode (a photo mode's display stays raw: it has none)."""
    from atlas.run.config import SweepConfig

    alone = SweepConfig().for_network(trained=True)
    assert alone.mode_names() == ["fourier"] and alone.settings("fourier").method == "fourier"
    listed = SweepConfig(modes=["noise", "photo"], photos=["chelsea"]).for_network(trained=True)
    assert listed.mode_names() == ["noise", "photo"]
    assert (listed.render.method, listed.render.display) == ("deepdream", "visstd")
    maco = SweepConfig(render={"method": "maco"}).for_network(trained=False)
    assert maco.mode_names() == ["maco"] and maco.settings("maco").learning_rate == 0.3  # the method's own default


def test_lite0_lists_the_shipped_photos_that_score_highest_for_a_class(lite0_frozen, tmp_path, monkeypatch):
    """On the trained EfficientNet-Lite0, the class page of Egyptian cat lists chelsea (the cat) first among the
    four shipped photos, and espresso's lists coffee first: the classifier's own logits on the photos. chelsea's
    probability of Egyptian cat is a forward pass of one photo (no seed): 0.367 on an AMD EPYC with AVX-512 (float32,
    and under ONEDNN_MAX_CPU_ISA=AVX2 above the bound too); bound 0.1."""
    from atlas.model.graph import load_model
    from atlas.pipeline import run_pipeline
    from atlas.run.classfiles import read_class_photos

    monkeypatch.setenv("ATLAS_CACHE_DIR", str(lite0_frozen.parent.parent))
    config = {"model": "efficientnet-lite0", "layers": ["block1_project"], "channels": 1, "workers": 1,
              "classes": ["Egyptian cat", "espresso"], "circuits": False, "output": str(tmp_path / "out"),
              "render": {"method": "deepdream", "octaves": 1, "steps": 2, "size": 64},
              "formats": {"web": {"size": 64}, "thumb": {"size": 32}}, "examples": {"folder": "photos", "top": 2}}
    path = tmp_path / "lite0.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    run_pipeline(loaded, load_model("efficientnet-lite0"), out=lambda line: None)
    run = read_run(loaded.run_folder)
    assert [(c.index, c.label) for c in run.classes] == [(285, "Egyptian cat"), (967, "espresso")]
    photos = read_class_photos(loaded.run_folder)
    assert [p.photo for p in photos[285]][0] == "chelsea.jpg" and photos[285][0].probability > 0.1
    assert [p.photo for p in photos[967]][0] == "coffee.jpg"
    assert len(photos[285]) == 4 and all((loaded.run_folder / p.thumb).is_file() for p in photos[285])
    page = (loaded.run_folder / "site" / "classes" / "0285.html").read_text()
    listed = re.findall(r'<figure class="class-photo">.*?<figcaption>([^<]+)<', page, re.S)
    assert listed[0] == "chelsea.jpg" and len(listed) == 4


def test_the_dry_run_counts_and_times_the_class_renders(tmp_path):
    import io

    from atlas.run.estimate import dry_run

    out = io.StringIO()
    assert dry_run(load_config(write_config(tmp_path)), out=out) > 0
    text = out.getvalue()
    assert re.search(r"^class\s+6\s", text, re.M)  # three classes in two modes, on one row
    assert "8 renders in this config" in text and not (tmp_path / "output").exists()
