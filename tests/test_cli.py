import csv
import io
import subprocess
import sys


def test_layers_table_lists_all_layers_and_totals():
    out = subprocess.run([sys.executable, "-m", "atlas.cli", "layers", "--model", "synthetic"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1].startswith("59 layers, 7,548 channels; and 9 block outputs (b0-b8")
    mixed = [256, 480, 508, 512, 512, 528, 832, 832, 1024]  # inception5h's mixed3a ... mixed5b
    assert lines[-1].endswith(f"{sum(mixed):,} channels")
    assert lines[0] == "input: RGB pixels 0..255 -> googlenet (mean 117)"
    assert "conv2d0_pre_relu" in lines[3] and "head1_bottleneck_pre_relu" in lines[-2]
    # the block outputs, marked bN, each right after the last conv of its block: mixed3a after its pool branch
    marked = [line.split() for line in lines[3:-1] if line.startswith("b")]
    assert [(row[0], row[1], row[4]) for row in marked[:2]] == [("b0", "mixed3a", "concat"),
                                                                ("b1", "mixed3b", "concat")]
    names = [line.split()[1] for line in lines[3:-1]]
    assert names.index("mixed3a") == names.index("mixed3a_pool_reduce_pre_relu") + 1
    assert len(names) == 59 + 9


def test_layers_csv(capsys):
    from atlas.cli import main

    assert main(["layers", "--model", "synthetic:0.125", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 59 and rows[0]["name"] == "conv2d0_pre_relu" and rows[0]["receptive_field"] == "7"


def test_bad_arguments_exit_2_with_one_line():
    run = subprocess.run([sys.executable, "-m", "atlas.cli", "layers", "--format", "xml"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_dream_writes_one_png_per_channel_and_prints_metrics(tmp_path, capsys):
    from PIL import Image

    from atlas.cli import main

    args = ["dream", "--model", "synthetic:0.125", "--layer", "mixed4c_pool_reduce_pre_relu", "--channel", "0-2",
            "--octaves", "1", "--steps", "3", "--size", "96", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    files = sorted((tmp_path / "out").glob("*.png"))
    assert [f.name for f in files] == [f"mixed4c_pool_reduce_pre_relu-000{c}.png" for c in range(3)]
    assert Image.open(files[0]).size == (96, 96)
    out = capsys.readouterr().out
    assert out.count("lift") == 3 and "rank" in out and "specific" in out


def test_dream_classic_on_a_block_output_from_a_photo(tmp_path):
    from atlas.cli import main

    target = tmp_path / "classic.png"
    assert main(["dream", "--model", "synthetic:0.125", "--layer", "mixed3a", "--objective", "layer",
                 "--photo", "chelsea", "--photo-octaves", "2", "--photo-steps", "2", "-o", str(target)]) == 0
    assert target.is_file()


def test_dream_user_errors_exit_2_with_one_line(tmp_path, capsys):
    from atlas.cli import main

    bad_photo = tmp_path / "bad.jpg"
    bad_photo.write_bytes(b"\xff\xd8\xff garbage")
    cases = [
        (["--layer", "mixed4d_3x3_bottleneck_pre_relu", "--channel", "999"], "which has 18 channels"),
        (["--layer", "mixed4dd", "--channel", "1"], "did you mean mixed4d"),
        (["--layer", "mixed4d_3x3_bottleneck_pre_relu"], "--channel is required"),
        (["--layer", "mixed3a", "--channel", "1", "--photo", str(bad_photo)], "is not an image Pillow can read"),
        (["--layer", "mixed3a", "--channel", "0-1", "-o", str(tmp_path / "one.png")], "give -o a folder"),
        (["--layer", "mixed3a", "--channel", "1", "--octaves", "0"], "octaves must be at least 1"),
    ]
    for extra, message in cases:
        assert main(["dream", "--model", "synthetic:0.125", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)


def test_dream_fourier_neuron_and_diversity(tmp_path, capsys):
    from PIL import Image

    from atlas.cli import main

    base = ["dream", "--model", "synthetic:0.125", "--size", "48", "--steps", "3"]
    assert main(base + ["--layer", "mixed4a_3x3_pre_relu", "--channel", "0-1", "--objective", "neuron",
                        "--method", "fourier", "-o", str(tmp_path / "neuron")]) == 0
    assert sorted(f.name for f in (tmp_path / "neuron").glob("*.png")) == [
        "mixed4a_3x3_pre_relu-0000.png", "mixed4a_3x3_pre_relu-0001.png"]
    assert Image.open(tmp_path / "neuron" / "mixed4a_3x3_pre_relu-0000.png").size == (48, 48)
    assert main(base + ["--layer", "mixed4e_3x3_pre_relu", "--channel", "7", "--diversity", "3",
                        "-o", str(tmp_path / "facets")]) == 0
    assert sorted(f.name for f in (tmp_path / "facets").glob("*.png")) == [
        f"mixed4e_3x3_pre_relu-0007-facet{k}.png" for k in range(3)]
    assert capsys.readouterr().out.count("lift") == 5


def test_dream_method_errors_exit_2_with_one_line(tmp_path, capsys):
    from atlas.cli import main

    cases = [(["--method", "fourier", "--photo", "chelsea"], "--photo works with --method deepdream"),
             (["--diversity", "2", "-o", str(tmp_path / "one.png")], "give -o a folder"),
             (["--method", "pixels"], "invalid choice: 'pixels'"),
             (["--diversity", "0"], "diversity must be at least 1"),
             (["--batch-size", "0"], "batch_size must be at least 1"),
             (["--step-size", "-1"], "step_size must be more than 0"),
             (["--precision", "float16"], "invalid choice: 'float16'"),
             (["--photo", "no-such-photo.jpg"], "no such file")]
    for extra, message in cases:
        assert main(["dream", "--model", "synthetic:0.125", "--layer", "mixed3a", "--channel", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)


def test_config_errors_name_the_key_and_what_fits():
    """A value of a union (`int | list[int]`) is told in the member its shape matches, or by listing the forms that
    fit, never by a pydantic type name (`grid.int`); a right key at the wrong level names its home."""
    import pytest

    from atlas.errors import UserError
    from atlas.run.config import MapConfig, SweepConfig
    from atlas.validation import validate

    cases = [
        (MapConfig, {"folder": "x", "grid": [0]}, "map: grid.0: Input should be greater than or equal to 1 (got 0)"),
        (MapConfig, {"folder": "x", "grid": 0}, "map: grid: Input should be greater than or equal to 1 (got 0)"),
        (MapConfig, {"folder": "x", "grid": "big"}, "map: grid: give a whole number or a list of whole numbers "
         "(got 'big')"),
        (SweepConfig, {"render": {"diversity": 4}}, "map: unknown key 'render.diversity' ('diversity' is a "
         "top-level key: write it beside 'render', not inside it)"),
        (SweepConfig, {"top": 3}, "map: unknown key 'top' (did you mean examples.top or explain.top or "
         "circuits.top?)"),
        (SweepConfig, {"channels": {"first": 0}}, "map: channels.first: Input should be greater than or equal to 1"),
        (SweepConfig, {"channels": {"frist": 3}}, "map: unknown key 'channels.frist' (did you mean 'first'?)"),
        (SweepConfig, {"workers": "many"}, "map: workers: give a whole number or 'auto' (got 'many')"),
        (SweepConfig, {"layers": 5}, "map: layers: give 'all', a list of strings or a string (got 5)"),
        (SweepConfig, {"circuits": "often"}, "map: circuits: give a boolean (true or false) or a mapping with keys "
         "top, batch_size (got 'often')"),
    ]
    for schema, data, message in cases:
        with pytest.raises(UserError) as caught:
            validate(schema, data, "map")
        assert str(caught.value).startswith(message), (data, str(caught.value))
        assert "int]" not in str(caught.value) and "\n" not in str(caught.value)


def test_map_grid_zero_is_one_line_naming_the_key(tmp_path, capsys):
    from atlas.cli import main

    assert main(["map", "probes", "--model", "synthetic:0.125", "-o", str(tmp_path / "run"), "--grid", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "atlas: error: map: grid.0: Input should be greater than or equal to 1 (got 0)\n"
    assert not (tmp_path / "run").exists()


def test_the_map_summary_explains_specificity_without_alarm():
    from atlas.analysis.maps import MapSummary

    lines = MapSummary(folder="probes", cells={"mixed5b": 29}, specific={"mixed5b": 0.21}).lines()
    line = next(line for line in lines if line.startswith("map: mixed5b"))
    assert line.startswith("map: mixed5b: 29 cells; 21% of their renders are specific (excite their own direction")
    assert "not a pass mark" in line


def test_figure_circuit_mistakes_name_the_circuit_option(tmp_path, capsys):
    from atlas.cli import main
    from tests.fakerun import make_fake_run, synthetic_layers

    run = make_fake_run(tmp_path / "run", layers=synthetic_layers(0.125)[:1], fraction=0.5, size=32, thumb=16)
    for value in ("nonsense", "a:1,b:2"):
        assert main(["figure", str(run), "--circuit", value]) == 2
        err = capsys.readouterr().err
        assert err.startswith("atlas: error: --circuit takes one layer:channel, e.g.") and err.count("\n") == 1
