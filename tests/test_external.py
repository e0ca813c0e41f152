"""Models from outside the package: a file's builder, a layer spec, an entry point; their runs rebuilt from the
copy each run folder keeps; `mnistlab compare`; and docs/your-model.md's walk-through, run as written."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from mnistlab.core.errors import MnistlabError
from mnistlab.models import config_for, get_card, list_models, load_checkpoint, resolve
from mnistlab.models.external import SOURCE_COPY, SPEC_COPY, layers_from_spec, load_entry_points, sha256
from mnistlab.training.engine import fit_group

QUIET = dict(progress=False, log=lambda line: None)
TINY = dict(epochs=1, batch_size=64, val_size=100, device="cpu")

STUDENT = '''
from torch import nn


def {name}(dropout: float = 0.0) -> nn.Module:
    """A student's network, giving logits."""
    return nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 12, 3), nn.ReLU(), nn.Dropout(dropout), nn.AdaptiveAvgPool2d(1),
                         nn.Conv2d(12, 10, 1), nn.Flatten())
'''


def student(folder: Path, name: str) -> Path:
    path = folder / f"{name.lower()}.py"
    path.write_text(STUDENT.format(name=name))
    return path


def test_a_file_model_trains_stacked_and_its_run_rebuilds_without_the_file(tmp_path, tiny_data):
    path = student(tmp_path, "StudentA")
    name = resolve(f"{path}:StudentA").name
    assert name == "StudentA" and get_card(name).params == (6 * 9 + 6) + 2 * 6 + (12 * 6 * 9 + 12) + (12 * 10 + 10)
    configs = [config_for(name, seed=s, output_dir=str(tmp_path / "runs" / f"seed{s}"), **TINY) for s in (1, 2)]
    summaries = fit_group(configs, data=tiny_data, **QUIET)
    assert [s["provenance"]["stacked"] for s in summaries] == [2, 2]  # its layers stack
    run = tmp_path / "runs" / "seed1"
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["source"] == f"{path}:StudentA" and recorded["source_sha256"] == sha256(path.read_bytes())
    assert (run / SOURCE_COPY).read_bytes() == path.read_bytes()
    path.unlink()  # the original is gone: the run's copy rebuilds it, as a fresh process does
    from mnistlab.models import registry
    from mnistlab.models.external import ensure_registered

    registry._REGISTRY.pop(name)
    lines: list[str] = []
    ensure_registered(recorded, run, lines.append)
    assert lines == [f"note: {path} is gone; the model is rebuilt from the run's copy, {run / SOURCE_COPY}"]
    model = load_checkpoint(run / "last.pt")
    assert sum(p.numel() for p in model.parameters()) == summaries[0]["params"]
    out = model(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10) and torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)  # logits made log-probs


def test_a_changed_copy_is_refused_and_a_changed_original_is_reported(tmp_path, tiny_data):
    path = student(tmp_path, "StudentB")
    name = resolve(f"{path}:StudentB").name
    out = tmp_path / "run"
    fit_group([config_for(name, output_dir=str(out), **TINY)], data=tiny_data, **QUIET)
    config = json.loads((out / "config.json").read_text())
    from mnistlab.models.external import ensure_registered

    path.write_text(path.read_text() + "# edited after the run\n")
    lines: list[str] = []
    ensure_registered(config, out, lines.append)  # same bytes registered already: nothing to say
    assert lines == []
    from mnistlab.models import registry

    registry._REGISTRY.pop(name)  # as a fresh process sees it
    ensure_registered(config, out, lines.append)
    assert lines and "changed since the run" in lines[0]
    (out / SOURCE_COPY).write_text("raise SystemExit('not the model')\n")
    registry._REGISTRY.pop(name)
    with pytest.raises(MnistlabError, match="is not the model the run trained"):
        ensure_registered(config, out)


def test_a_layer_spec_builds_trains_and_keeps_its_copy(tmp_path, tiny_data):
    spec = {
        "name": "specnet",
        "layers": [{"conv": 8}, {"maxpool": 2}, {"separable": 12, "padding": 1}, {"gap": True}, {"classes": True}],
    }
    (tmp_path / "specnet.json").write_text(json.dumps(spec))
    name = resolve(str(tmp_path / "specnet.json")).name
    assert name == "specnet" and "separable 12" in get_card(name).design
    out = tmp_path / "run"
    fit_group([config_for(name, output_dir=str(out), **TINY)], data=tiny_data, **QUIET)
    assert json.loads((out / SPEC_COPY).read_text()) == spec
    assert len(layers_from_spec(spec, "x")) == 5


@pytest.mark.parametrize(
    "source, name, message",
    [
        ("def Raises():\n    raise RuntimeError('boom')\n", "Raises", "the builder raised RuntimeError: boom"),
        ("def Three():\n    return 3\n", "Three", "returned a int, not a torch.nn.Module"),
        (
            "from torch import nn\ndef Wide():\n    return nn.Sequential(nn.Conv2d(1, 10, 3), nn.Flatten())\n",
            "Wide",
            r"maps \[2, 1, 28, 28\] to \[2, 6760\]; it must give \[2, 10\]",
        ),
        (
            "from torch import nn\ndef Bad():\n    return nn.Conv2d(3, 10, 28)\n",
            "Bad",
            "a \\[2, 1, 28, 28\\] batch fails",
        ),
        ("from torch import nn\ndef model8():\n    return nn.Flatten()\n", "model8", "model name 'model8' is taken"),
        ("x = 1\n", "Missing", "has no builder 'Missing'"),
        ("import nothing_of_the_kind\n", "X", "running .* failed: ModuleNotFoundError"),
    ],
)
def test_a_bad_model_file_is_one_clear_error_before_any_training(tmp_path, source, name, message):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(MnistlabError, match=message):
        resolve(f"{path}:{name}")
    assert name not in list_models() or name == "model8"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"layers": [{"conv": 8}, {"dense": 10}]}, "layer 2 .* must name one of conv"),
        ({"layers": [{"conv": 8, "stride": 2}]}, "unknown setting 'stride'"),
        ({"layers": []}, "'layers' must be a non-empty list"),
        ({"name": "no spaces", "layers": [{"conv": 8}]}, "must be letters, digits and underscores"),
        ({"layers": [{"conv": 8}, {"gap": True}]}, r"maps \[2, 1, 28, 28\] to \[2, 8\]"),
    ],
)
def test_a_bad_layer_spec_is_one_clear_error(tmp_path, spec, message):
    (tmp_path / "bad_spec.json").write_text(json.dumps(spec))
    with pytest.raises(MnistlabError, match=message):
        resolve(str(tmp_path / "bad_spec.json"))


def test_missing_files_modules_and_malformed_names_are_one_line(tmp_path):
    for spec, message in [
        (f"{tmp_path}/nowhere.py:Net", "does not exist"),
        ("no_such_package.models:Net", "no module 'no_such_package.models'|cannot import module"),
        (f"{tmp_path}/nowhere.json", "does not exist"),
        ("my_net.py:", "FILE.py:BUILDER, MODULE:BUILDER or SPEC.json"),
    ]:
        with pytest.raises(MnistlabError, match=message):
            resolve(spec)


def test_an_installed_package_registers_models_through_entry_points(tmp_path, monkeypatch):
    """A course's own package: its dist-info names a builder in the group mnistlab.models."""
    package = tmp_path / "coursenets"
    package.mkdir()
    (package / "__init__.py").write_text(STUDENT.format(name="lesson1"))
    info = tmp_path / "coursenets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: coursenets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mnistlab.models]\nlesson1 = coursenets:lesson1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_entry_points() == ["lesson1"]
    assert "lesson1" in list_models() and get_card("lesson1").params > 0
    assert config_for("lesson1").model == "lesson1"
    from mnistlab_lab.studies import final_models

    # the lab's report and default final runs are of its own models, not of those from outside
    assert "lesson1" not in list_models(outside=False) and "lesson1" not in final_models()


def readme_walkthrough() -> tuple[str, list[str]]:
    """docs/your-model.md's file and commands, as written there."""
    text = (ROOT / "docs" / "your-model.md").read_text()
    block = text.split("<!-- your-model:start -->")[1].split("<!-- your-model:end -->")[0]
    python = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in bash.splitlines() if line.strip()]
    return python, commands


@pytest.mark.real_data
def test_the_readme_walkthrough_runs_as_written(mnistlab, tmp_path):
    python, commands = readme_walkthrough()
    assert python.startswith("# my_net.py\n") and len(python.strip().splitlines()) <= 14
    (tmp_path / "my_net.py").write_text(python)
    (tmp_path / "results").symlink_to(ROOT / "results")  # the recorded runs it compares against
    assert [c.split()[1] for c in commands] == ["summary", "train", "compare", "demo"]
    for command in commands[:3]:
        args = command.split()[1:]
        if args[0] == "train":
            args += ["--epochs", "1", "--limit", "600", "--quiet"]
        result = mnistlab(*args, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
    assert "receptive field" in mnistlab(*commands[0].split()[1:], cwd=tmp_path).stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "MyNet").iterdir()) == ["seed1", "seed2", "seed3"]
    assert "3 of 3" in (tmp_path / "cmp" / "compare.md").read_text()  # Model 8's recorded seeds held
    (tmp_path / "my_net.py").unlink()  # the demo rebuilds the model from the run's own copy
    with socket.socket() as probe:  # a free port for the page
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", *commands[3].split()[1:], "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        deadline = time.monotonic() + 120
        while "serving on" not in output and demo.poll() is None and time.monotonic() < deadline:
            output += demo.stdout.readline()
        assert "serving on" in output, output
    finally:
        demo.terminate()
        demo.wait(30)


def test_the_readme_model_file_is_ten_lines_of_code():
    python, _ = readme_walkthrough()
    code = [line for line in textwrap.dedent(python).splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) <= 10


def test_cli_paths_for_a_file_model_are_one_line_on_bad_input(mnistlab, tmp_path):
    (tmp_path / "bad.py").write_text("def Three():\n    return 3\n")
    for args, message in [
        (["summary", "bad.py:Three"], "returned a int"),
        (["train", "--model", "missing.py:Net"], "does not exist"),
        (["compare", "."], "no finished runs"),
    ]:
        result = mnistlab(*args, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]  # nothing created


def test_summary_of_a_model_whose_field_cannot_be_traced_still_gives_shapes_and_params(tmp_path):
    from click.testing import CliRunner

    from mnistlab.cli import cli

    (tmp_path / "rolled.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Rolled(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = nn.Conv2d(1, 10, 28)\n\n"
        "    def forward(self, x):\n        return self.conv(torch.roll(x, 1, dims=2)).flatten(1)\n"
    )
    result = CliRunner().invoke(cli, ["summary", f"{tmp_path / 'rolled.py'}:Rolled"])
    assert result.exit_code == 0, result.output
    assert "Rolled: receptive field not computed (" in result.output and "roll" in result.output
    assert "model.conv" in result.output and "10x1x1" in result.output and "Total: 7,850 parameters" in result.output


@pytest.mark.parametrize("kind", ["file", "spec"])
def test_a_cut_group_of_a_model_from_outside_resumes_in_a_fresh_process_like_model8(tmp_path, tiny_data, kind):
    """The battery's case: `train --model net.py:Net --seeds 1,2` stopped in epoch 2, then `train --resume DIR` in
    a new process, where nothing has registered the model yet: the runner registers it from the run's copy."""
    from mnistlab.core.config import TrainConfig
    from mnistlab.jobs.runner import run_all
    from mnistlab.models import registry

    if kind == "file":
        where = f"{student(tmp_path, 'StudentR')}:StudentR"
    else:
        spec = {"name": "specr", "layers": [{"conv": 8}, {"maxpool": 2}, {"gap": True}, {"classes": True}]}
        (tmp_path / "specr.json").write_text(json.dumps(spec))
        where = str(tmp_path / "specr.json")
    name = resolve(where).name
    tiny = {**TINY, "epochs": 2}

    def configs(folder):
        return [config_for(name, seed=s, output_dir=str(tmp_path / folder / f"seed{s}"), **tiny) for s in (1, 2)]

    whole = fit_group(configs("whole"), data=tiny_data, **QUIET)
    fit_group(configs("cut"), data=tiny_data, stop_after=1, **QUIET)
    registry._REGISTRY.pop(name)  # a fresh process: only the run folders know the model
    read = [TrainConfig.read(tmp_path / "cut" / f"seed{s}") for s in (1, 2)]
    resumed = run_all(read, stack=True, data=tiny_data, **QUIET)
    assert [s["test_acc_last3"] for s in resumed] == [s["test_acc_last3"] for s in whole]
    assert [s["provenance"]["stacked"] for s in resumed] == [2, 2]


CELL = '''
import torch.nn.functional as F
from torch import nn


class {name}(nn.Module):
    """A notebook's network."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        return self.head(F.relu(self.c1(x)).mean((2, 3)))


history = []  # the rest of a cell: never part of the model's kept source
'''

SIMULATED_CELL = """
import linecache, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_digits
source = {source!r}
filename = "/tmp/ipykernel_4242/1234567.py"  # where ipykernel says a cell's code lives; linecache holds its text
linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
exec(compile(source, filename, "exec"), globals())
import mnistlab
config = mnistlab.config_for({name}, epochs=2, batch_size=64, val_size=100, device="cpu", output_dir={out!r})
data = (tiny_digits(600, seed=0), tiny_digits(200, seed=1))
print(mnistlab.fit(config, data=data, progress=False, log=lambda m: None, stop_after={stop}))
"""


def test_a_model_defined_in_a_notebook_cell_trains_and_resumes_in_a_fresh_process(tmp_path, tiny_data):
    """`fit(config_for(CellNet))` in a kernel whose cells have no file: the run keeps the class's definition and
    its cell's imports, and a fresh process (the command line's `train --resume`) finishes it from that copy."""
    from conftest import ROOT

    from mnistlab.core.config import TrainConfig
    from mnistlab.jobs.runner import run_all
    from mnistlab.models.external import SOURCE_COPY

    def cell(out, stop):
        script = SIMULATED_CELL.format(
            tests=str(ROOT / "tests"), source=CELL.format(name="CellNet"), name="CellNet", out=str(out), stop=stop
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    cell(tmp_path / "whole", "None")
    cell(tmp_path / "cut", "1")
    kept = (tmp_path / "cut" / SOURCE_COPY).read_text()
    assert "class CellNet(nn.Module):" in kept and "history = []" not in kept and "import torch.nn.functional" in kept
    recorded = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert recorded["source"] == "__main__:CellNet" and recorded["model"] == "CellNet"
    resumed = run_all([TrainConfig.read(tmp_path / "cut")], stack=True, data=tiny_data, progress=False, log=print)
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert resumed[0]["test_acc_last3"] == whole["test_acc_last3"] and resumed[0]["params"] == 6 * 9 + 6 + 70


def test_the_python_api_takes_a_class_a_builder_or_a_file_wherever_it_names_a_model(tmp_path):
    import mnistlab
    from mnistlab.models import config_for, create_model

    path = student(tmp_path, "StudentP")
    assert sum(p.numel() for p in create_model(f"{path}:StudentP").parameters()) == get_card("StudentP").params

    def builder() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    table = mnistlab.analyze(builder)
    assert table.params == 7850 and str(table) == table.render_table() and "features.model" not in str(table)
    assert config_for(builder, epochs=2).epochs == 2 and config_for(builder).model == "builder"
    with pytest.raises(MnistlabError, match="not a built Sequential: each seed builds its own"):
        config_for(builder())
    with pytest.raises(MnistlabError, match="a model is a name, a FILE.py:BUILDER spec"):
        config_for(3)


def test_small_things_a_student_meets(mnistlab, tmp_path):
    """predict --top 3; --seeds -1 refused; a folder of another model's seeds refused; a file model's run records
    the file's absolute path, so `predict` from another folder finds it."""
    import numpy as np
    from PIL import Image

    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 13:15] = 255  # a one
    Image.fromarray(pixels).save(tmp_path / "one.png")
    top = mnistlab("predict", tmp_path / "one.png", "--top", "3")
    assert (
        top.returncode == 0 and top.stdout.count("(p=") == 3 and top.stdout.startswith(f"{tmp_path / 'one.png'}: 1 (p=")
    )
    bad = mnistlab("train", "--seeds", "-1", "--epochs", "1")
    assert bad.returncode == 2 and "seeds must be distinct integers of 0 or more" in bad.stderr
    (tmp_path / "group" / "seed1").mkdir(parents=True)
    (tmp_path / "group" / "seed1" / "config.json").write_text(json.dumps({"model": "sepnet3k", "seed": 1}))
    other = mnistlab(
        "train", "--model", "model8", "--seeds", "2,3", "--epochs", "1", "--output-dir", tmp_path / "group"
    )
    assert other.returncode == 2 and "holds runs of another model (seed1)" in other.stderr, other.stderr
    student(tmp_path, "StudentAbs")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "absspec", "layers": [{"conv": 4}, {"gap": True}, {"classes": True}]}))
    import os

    from mnistlab.models.external import resolve as resolve_spec

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        card = resolve_spec("studentabs.py:StudentAbs")
        spec_card = resolve_spec("spec.json")
    finally:
        os.chdir(here)
    assert card.source == f"{tmp_path / 'studentabs.py'}:StudentAbs" and spec_card.source == str(spec_file)


DECODER = (
    "from torch import nn\n\n\ndef Decoder():\n"
    "    return nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),\n"
    "                         nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
    "                         nn.Flatten(), nn.Linear(8, 10))\n"
)


@pytest.mark.parametrize("fmt", ["json", "markdown", "table"])
def test_every_summary_format_carries_every_layer_where_the_field_is_not_computed(tmp_path, fmt):
    """A transpose-convolution decoder head: each format lists every layer with its shape, parameters and MACs
    (the transpose convolution's counted: 14x14 inputs x 16 x 8 x 2x2 = 100,352), the field said to be missing."""
    import json

    from click.testing import CliRunner

    from mnistlab.cli import cli

    (tmp_path / "decoder.py").write_text(DECODER)
    result = CliRunner().invoke(cli, ["summary", f"{tmp_path / 'decoder.py'}:Decoder", "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "json":
        data = json.loads(result.output)
        assert data["receptive_field"] is None and data["why"]
        assert [row["type"] for row in data["rows"]][:3] == ["Conv2d", "ReLU", "ConvTranspose2d"]
        assert data["rows"][2]["macs"] == 100_352 and data["rows"][2]["output_shape"] == [8, 28, 28]
        assert data["params"] == sum(row["params"] for row in data["rows"]) and data["macs"] == 28_224 + 100_352 + 80
    else:
        assert "receptive field not computed" in result.output and "100,352" in result.output
        assert ("| Layer | Type |" in result.output) == (fmt == "markdown")


def test_a_runs_checkpoint_loads_its_own_model_when_another_of_that_name_is_registered(tmp_path, tiny_data):
    """Two files each define a LogitNet: a run of the first loads from its own copy even after the second was
    registered in the same process (the run's model_source.py is what it trained)."""
    import mnistlab
    from mnistlab.models import load_checkpoint, model_card

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    net = "from torch import nn\n\n\ndef LogitNet():\n    return nn.Sequential(nn.Conv2d(1, {c}, 28), nn.Flatten(), nn.Linear({c}, 10))\n"
    (first / "net.py").write_text(net.format(c=4))
    (second / "net.py").write_text(net.format(c=6))
    run = mnistlab.fit(f"{first / 'net.py'}:LogitNet", epochs=1, val_size=100, output_dir=tmp_path / "run",
                       data=tiny_data, log=lambda m: None)  # fmt: skip
    from mnistlab.models import registry

    registry._REGISTRY.pop("LogitNet")  # as in a fresh process where the user works with the other LogitNet
    assert model_card(f"{second / 'net.py'}:LogitNet").params == 6 * 28 * 28 + 6 + 6 * 10 + 10
    loaded = load_checkpoint(run.path / "last.pt")
    assert sum(p.numel() for p in loaded.parameters()) == run.summary["params"] == 4 * 28 * 28 + 4 + 4 * 10 + 10
    third = tmp_path / "c"
    third.mkdir()
    (third / "net.py").write_text(net.format(c=8))
    with pytest.raises(MnistlabError, match="is taken"):  # naming a new one is still refused: only a run takes over
        model_card(f"{third / 'net.py'}:LogitNet")
