"""Every bad input the review listed ends in a one-line error naming the problem, never a
traceback or a silent wrong number: command-line options, edited headers of a saved file, an
edited config.json or labels.json of an export, a module changed in place, and parameters whose
bounds would overflow."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from iclkit import cli
from iclkit import constructions as C
from iclkit.primitives import Program, aff, dot


def run(argv: list[str], capsys) -> tuple[int, str]:
    """``iclkit ARGV`` in this process: (exit code, everything it printed, with the console's
    line wrapping undone)."""
    with cli.console.capture() as printed:
        try:
            rc = cli.main(argv)
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
    captured = capsys.readouterr()
    return rc, " ".join((printed.get() + captured.out + captured.err).split())


@pytest.mark.parametrize("argv, message", [
    (["build", "ridge", "--d", "2", "--lam", "1e-300", "--out", "x.safetensors"], "lam = 1e-300 is outside the magnitudes"),
    (["verify", "--property", "--examples", "-1"], "argument --examples: must be an integer >= 1, got -1"),
    (["train", "--log-every", "0"], "argument --log-every: must be an integer >= 1, got 0"),
    (["verify", "--trials", "0"], "argument --trials: must be an integer >= 1, got 0"),
    (["verify", "--trials", "-1"], "argument --trials: must be an integer >= 1, got -1"),
    (["verify", "--d", "0"], "argument --d: must be an integer >= 1, got 0"),
    (["prove", "--max-d", "0"], "argument --max-d: must be an integer >= 1, got 0"),
    (["compare", "--prompts", "0"], "argument --prompts: must be an integer >= 1, got 0"),
    (["build", "sgd", "--d", "2", "--lr", "nan", "--out", "x.safetensors"], "argument --lr: must be finite"),
    (["run", "no-such-file.safetensors"], "is not a safetensors model file"),
])
def test_command_line_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out = run(argv, capsys)
    assert rc == 2 and message in out and "Traceback" not in out, out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "sgd.safetensors"
    C.sgd(2, 3, lr=0.01, lam=0.1).save(path)
    with safe_open(str(path), framework="pt") as f:
        header = {k: json.loads(v) for k, v in f.metadata().items()}
    return path, header, load_file(str(path))


@pytest.mark.parametrize("part, key, value, message", [
    ("config", "attn_ln", True, "sets attn_ln = True"),
    ("config", "final_ln", True, "sets final_ln = True"),
    ("config", "ln_eps", 1e30, "sets ln_eps = 1e+30"),
    ("config", "dtype", "float32", "sets dtype = 'float32'"),
    ("config", "max_len", 12, "sets max_len = 12"),
    ("config", "num_layers", 5, "sets num_layers = 5"),
    ("config", "loop", None, "sets loop = None"),
    ("config", "head_dim", 4, "sets head_dim = 4"),
    ("config", "ln_affine", True, "sets ln_affine = True"),
    ("config", "colour", "blue", "a field iclkit does not know"),
    ("iclkit", "construction", "ridge", "do not fit construction 'ridge'"),
    ("iclkit", "construction", "nonesuch", "'nonesuch' is not one iclkit ships"),
    ("iclkit", "mode", "faithful", "is not the sgd construction's for its parameters (d=2, n=3, faithful)"),
    ("iclkit", "n", 4, "is not the sgd construction's for its parameters (d=2, n=4, fused)"),
    ("iclkit", "levels", 1.5, "levels (Richardson scales per GeLU product) must be a positive integer"),
    ("iclkit", "program", None, "the program it carries is not the sgd construction's"),
    ("iclkit", "origin", "elsewhere", "unknown origin 'elsewhere'"),
])
@pytest.mark.parametrize("command", ["prove", "run"])
def test_an_edited_header_is_refused_by_name(saved, part, key, value, message, command, capsys, tmp_path):
    path, header, tensors = saved
    edited = json.loads(json.dumps(header))
    edited[part][key] = value
    target = tmp_path / "edited.safetensors"
    save_file(tensors, str(target), metadata={k: json.dumps(v) for k, v in edited.items()})
    rc, out = run([command, str(target)], capsys)
    assert rc == 2 and message in out and "Traceback" not in out, out


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    pytest.importorskip("transformers")
    from iclkit.export import to_hf_gpt2

    out = tmp_path_factory.mktemp("export") / "sgd"
    to_hf_gpt2(C.sgd(2, 3, lr=0.01, lam=0.1), out)
    return out


@pytest.mark.parametrize("key, value", [("activation_function", "relu"), ("scale_attn_by_inverse_layer_idx", True),
                                        ("layer_norm_epsilon", 1e-5), ("n_head", 7), ("reorder_and_upcast_attn", True)])
def test_an_edited_config_json_is_refused_by_name(export, key, value, tmp_path):
    from iclkit.export import load_export

    copy = shutil.copytree(export, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"config.json: sets {key} = "):
        load_export(copy)


def test_a_deleted_config_json_or_labels_naming_another_construction_is_refused(export, tmp_path):
    from iclkit.export import load_export

    copy = shutil.copytree(export, tmp_path / "copy")
    (copy / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json: cannot be read"):
        load_export(copy)
    copy = shutil.copytree(export, tmp_path / "other")
    labels = json.loads((copy / "labels.json").read_text())
    labels.update(construction="gd", params={"lr": 0.01, "lam": 0.1, "w0": [0.0, 0.0]})
    (copy / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ValueError, match="labels.json: w_bound bounds the iterates of steps > 1"):
        load_export(copy)  # sgd's w_bound is no parameter of one-step gd
    labels["domain"].pop("w_bound")
    (copy / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ValueError, match="labels.json: the program it carries is not the gd construction's"):
        load_export(copy)
    labels.update(origin="program", program={"steps": "none"})
    (copy / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ValueError, match="labels.json: malformed program data"):
        load_export(copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.float(), "the model's weights are float32, it was compiled in float64"),
    (lambda m: m.half().double(), "tensor .* is no longer the compiled one"),
    (lambda m: m.layers[-1].W_out.mul_(1 + 1e-6), "tensor layers.* is no longer the compiled one"),
])
def test_predict_refuses_a_module_changed_in_place(change, message):
    c = C.sgd(2, 3, lr=0.01, lam=0.1)
    assert not c.guarded  # no run-time certificate would catch it
    X, y, xq = np.ones((3, 2)), np.ones(3), np.ones(2)
    with torch.no_grad():
        change(c.model)
    with pytest.raises(ValueError, match=message):
        c.predict(X, y, xq)


@pytest.mark.parametrize("build, message", [
    (lambda: C.sgd(2, 3, lr=0.01, w0=np.full(2, 1e300)), r"\|w0\| = inf is outside the magnitudes"),
    (lambda: C.gd(2, 3, lr=0.01, w0=np.full(2, 1e300)), r"\|w0\| = inf is outside the magnitudes"),
    (lambda: C.sgd(2, 3, lr=0.01, x_norm=1e300), "x_norm = 1e[+]300 is outside the magnitudes"),
    (lambda: C.ridge(2, 3, lam=0.1, y_bound=1e300), "y_bound = 1e[+]300 is outside the magnitudes"),
    (lambda: C.ridge(2, 3, lam=1e-300), "lam = 1e-300 is outside the magnitudes"),
    (lambda: C.sgd(2, 3, lr=0.01, levels=1.5), "levels .* must be a positive integer, got 1.5"),
    (lambda: C.gd(2, 3, lr=0.01, mode="fast"), "mode must be 'fused' or 'faithful'"),
])
def test_parameters_that_would_overflow_the_bounds_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_inputs_that_require_grad_are_read_as_values():
    c = C.sgd(2, 3, lr=0.01, lam=0.1)
    X, y, xq = torch.randn(3, 2, requires_grad=True), torch.randn(3, requires_grad=True), torch.randn(2)
    assert c.predict(X, y, xq) == c.predict(X.detach().numpy(), y.detach().numpy(), xq.numpy())


def test_a_model_far_too_large_is_refused_before_it_is_planned(monkeypatch):
    """ridge d = 64, n = 1000: a lower bound on its parameters from the schedule alone (12.7
    billion) is refused against the memory available (here set to 24 GiB)."""
    monkeypatch.setattr("iclkit.primitives.compile.available_memory", lambda: 24 * 2**30)
    with pytest.raises(ValueError, match=r"ridge\(d=64, n=1000\) would hold at least [\d,]+ parameters"):
        C.ridge(64, 1000, lam=0.1)


def test_bare_iclkit_prints_usage(capsys):
    rc, out = run([], capsys)
    assert rc == 0 and "usage: iclkit" in out and "verify" in out and "iclkit verify (" not in out


@pytest.mark.parametrize("key, value, message", [
    ("dtype", "float32", "sets the dtype to {'dtype': 'float32'}"),
    ("model_type", "gpt_neo", "sets model_type = 'gpt_neo'"),
    ("activation_function", None, "lacks activation_function"),
    ("layer_norm_epsilon", None, "lacks layer_norm_epsilon"),
])
def test_a_deleted_or_retyped_config_json_key_is_refused(export, key, value, message, tmp_path):
    """A key deleted from config.json would take transformers' default (activation_function:
    gelu_new); a float32 dtype makes a stock loader build the model in float32 (off by 1.1)."""
    from iclkit.export import load_export

    copy = shutil.copytree(export, tmp_path / "copy")
    config = json.loads((copy / "config.json").read_text())
    if value is None:
        del config[key]
    else:
        config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json: " + re.escape(message)):
        load_export(copy)


@pytest.mark.parametrize("make, message", [
    (lambda: Program({"x": (2,), "y": ()}, {"x": 1e300, "y": 1.0}, [aff("y2", ("y", 1.0))]), "bound 1e[+]300, beyond"),
    (lambda: Program({"x": (2,), "y": ()}, {"x": float("inf"), "y": 1.0}, []), "bound inf, beyond"),
    (lambda: Program({"y": (), "z": ()}, {"y": 1.0}, [aff("z", ("y", 1e300))]), "term 'y' has a coefficient .*beyond"),
    (lambda: Program({"y": (), "z": ()}, {"y": 1.0}, [aff("z", ("y", 1.0), bound=-1.0)]), "bound= must be a number"),
    (lambda: Program({"y": (), "z": ()}, {"y": 1.0}, [aff("z", ("y", 1.0), bound=float("nan"))]), "bound= must be"),
    (lambda: Program({"y": (), "z": ()}, {"y": 1.0}, [dot("z", "y", "y", 1, bias=float("nan"))]), "the bias .* NaN"),
])
def test_a_program_with_constants_beyond_its_analysis_is_refused_by_name(make, message):
    from iclkit.primitives import ProgramError, compile_program

    with pytest.raises(ProgramError, match=message):
        compile_program(make(), max_len=3)


def test_a_user_construction_may_not_take_a_shipped_name_and_certify_names_a_retyped_module():
    from iclkit.constructions import from_program

    program = Program({"x": (2,), "y": (), "yhat": ()}, {"x": 1.0, "y": 1.0}, [dot("yhat", "x", "x", 2)])
    with pytest.raises(ValueError, match="name 'ridge' is a construction iclkit ships"):
        from_program(program, name="ridge", d=2, n=1)
    c = C.sgd(2, 3, lr=0.01)
    c.model.float()
    with pytest.raises(ValueError, match="the model's weights are float32, it was compiled in float64"):
        c.certify(np.ones((3, 2)), np.ones(3), np.ones(2))


def test_saving_into_a_missing_directory_is_one_line(capsys, tmp_path):
    rc, out = run(["build", "sgd", "--d", "2", "--out", str(tmp_path / "no" / "such" / "m.safetensors")], capsys)
    assert rc == 2 and "error: " in out and ": :" not in out and "Traceback" not in out, out
