import csv
import io
import subprocess
import sys


def test_layers_table_lists_all_layers_and_totals():
    out = subprocess.run([sys.executable, "-m", "atlas.cli", "layers", "--model", "synthetic"],
                         capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1] == "59 layers, 7,548 channels"
    assert "conv2d0_pre_relu" in lines[2] and "head1_bottleneck_pre_relu" in lines[-2]


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
