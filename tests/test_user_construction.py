"""A construction written with the public API alone gets the whole pipeline: from_program,
guarded predict, certify, save, `iclkit prove FILE` and `iclkit run FILE` in a fresh process
that never imports the author's code, the GPT-2 export and load_export."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from iclkit.constructions import from_program
from iclkit.primitives import BoundError, Mean, Program, aff, div, dot, mov, mul

D, N = 2, 3


def normalised_sum(d: int = D, n: int = N) -> Program:
    """yhat = x_q . (X^T y) / (k + 2) for a prompt of k examples: a sum over the context (a mean
    times the column count) and a division by a divisor an attention-side aff computes
    (the pattern the fused scheduler once miscompiled)."""
    slots = {"x": (d,), "y": (), "x_ex": (d,), "xy": (d,), "xy_mean": (d,), "count": (), "b": (d,), "den": (),
             "w": (d,), "yhat": ()}
    return Program(slots, {"x": 3.0, "y": 9.0}, [
        mov("x_ex", "x", 1),
        mul("xy", "x_ex", "y", (d, 1, 1)),
        Mean("xy_mean", src="xy"),
        aff("count", ("pos", float(2 * n + 1)), bias=1.0),  # t + 1
        mul("b", "xy_mean", "count", (d, 1, 1)),            # X^T y over the examples so far
        aff("den", ("count", 0.5), bias=1.0),                # (t + 1) / 2 + 1 = k + 2 at the query
        div("w", "b", "den", den_min=1.0),
        dot("yhat", "w", "x", d),
    ], name="normalised_sum")


def closed_form(X, y, xq):
    return xq @ (X.T @ y) / (len(y) + 2)


def prompts(batch: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X, w = rng.uniform(-1, 1, (batch, N, D)), rng.uniform(-1, 1, (batch, D))
    return X, np.einsum("bnd,bd->bn", X, w), rng.uniform(-1, 1, (batch, D))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`iclkit ...` in a fresh interpreter: it has never seen this file's program."""
    return subprocess.run([sys.executable, "-m", "iclkit.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_a_user_construction_predicts_certifies_and_refuses(mode):
    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N, closed_form=closed_form, mode=mode)
    X, y, xq = prompts()
    exact = np.array([closed_form(X[b], y[b], xq[b]) for b in range(len(X))])
    yhat, cert = c.predict(X, y, xq), c.certify(X, y, xq)
    assert np.all(np.abs(yhat - c.reference(X, y, xq)) <= cert)  # each prediction within its own certificate
    assert np.all(np.abs(yhat - exact) <= c.error_bound)  # and the closed form within the a-priori bound
    with pytest.raises(BoundError, match="x_norm"):
        c.predict(X * 4, y, xq)  # |x| beyond the program's input bound
    with torch.no_grad():
        c.model.layers[-1].W_out.mul_(1 + 1e-6)
    with pytest.raises(ValueError, match="no longer the compiled one"):
        c.predict(X, y, xq)


def test_a_saved_user_construction_is_proved_and_run_in_a_fresh_process(tmp_path):
    """Its domain (|x| <= 1.5) is smaller than N(0, I) prompts reach: `iclkit run` samples inside it."""
    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N, closed_form=closed_form, x_norm=1.5,
                     y_bound=2.0)
    path = tmp_path / "user.safetensors"
    c.save(path)
    proof = run_cli("prove", str(path))
    assert proof.returncode == 0, proof.stdout + proof.stderr
    assert "proved from the weights" in proof.stdout and "network = program" in proof.stdout
    ran = run_cli("run", str(path))
    assert ran.returncode == 0 and "program (exact)" in ran.stdout, ran.stdout + ran.stderr

    # one weight that moves the output, scaled by 1.5: the proof fails, naming the layer
    from iclkit.transformer import Transformer

    model, meta = Transformer.load(path)
    last = model.layers[-1]
    unit = int(torch.argmax(last.W_out.abs().sum(dim=1)))
    with torch.no_grad():
        last.W_out[unit] *= 1.5
    X, y, xq = prompts()
    with torch.no_grad():
        moved = model(c.encode(X, y, xq))[:, -1].numpy()
    assert np.abs(moved - c.predict(X, y, xq)).max() > 1e-6  # the mutant changes the prediction
    model.save(tmp_path / "mutant.safetensors", meta)
    mutant = run_cli("prove", str(tmp_path / "mutant.safetensors"))
    assert mutant.returncode == 1 and f"layer {model.cfg.num_layers - 1}" in mutant.stdout, mutant.stdout


def test_an_edited_program_in_the_header_is_not_proved_as_the_weights(tmp_path):
    """The header carries the program; a different program (one coefficient changed) rebuilds a
    different construction, whose weights the file's are not."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N)
    c.save(tmp_path / "u.safetensors")
    with safe_open(str(tmp_path / "u.safetensors"), framework="pt") as f:
        header = dict(f.metadata())
    meta = json.loads(header["iclkit"])
    step = next(s for s in meta["program"]["steps"] if s["dst"] == "den")
    step["bias"] = 2.0
    header["iclkit"] = json.dumps(meta)
    save_file(load_file(str(tmp_path / "u.safetensors")), str(tmp_path / "e.safetensors"), metadata=header)
    proof = run_cli("prove", str(tmp_path / "e.safetensors"))
    assert proof.returncode == 1 and "FAILS" in proof.stdout, proof.stdout


def test_from_program_refuses_what_breaks_the_contract():
    p = normalised_sum()
    cases = [
        (dict(name="u", d=3, n=N), r"input slot 'x' of shape \(3,\)"),
        (dict(name="u", d=D, n=N, x_norm=4.0), "x_norm 4 exceeds the program's bound 3"),
        (dict(name="u", d=D, n=N, mode="fast"), "mode must be 'fused' or 'faithful'"),
        (dict(name="u", d=D, n=N, dtype="float16"), "dtype must be one of"),
        (dict(name="u", d=D, n=0), "n must be a positive integer"),
        (dict(name="", d=D, n=N), "name must be a non-empty string"),
        (dict(name="u", d=D, n=N, closed_form=3), "closed_form must be a function"),
        (dict(name="u", d=D, n=N, levels=1.5), "levels .* must be a positive integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            from_program(p, **kwargs)
    no_yhat = Program({"x": (D,), "y": (), "z": ()}, {"x": 1.0, "y": 1.0}, [dot("z", "x", "x", D)])
    with pytest.raises(ValueError, match="scalar slot 'yhat'"):
        from_program(no_yhat, name="u", d=D, n=N)
    with pytest.raises(ValueError, match="needs an iclkit.primitives.Program"):
        from_program("not a program", name="u", d=D, n=N)


def test_a_user_construction_exports_and_reloads(tmp_path):
    pytest.importorskip("transformers")
    from iclkit.export import load_export, to_hf_gpt2

    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N, closed_form=closed_form, mode="faithful")
    to_hf_gpt2(c, tmp_path / "gpt2")
    labels = json.loads((tmp_path / "gpt2" / "labels.json").read_text())
    assert labels["origin"] == "program" and labels["program"] == c.compiled.program.to_dict()
    rebuilt, model, W_E = load_export(tmp_path / "gpt2")
    X, y, xq = prompts()
    with torch.no_grad():
        got = model(inputs_embeds=c.encode(X, y, xq) @ W_E).logits[:, -1, 0].numpy()
    exact = np.array([closed_form(X[b], y[b], xq[b]) for b in range(len(X))])
    assert np.abs(got - exact).max() <= 1e-8 * (1 + np.abs(exact).max())  # the export's measured target
    assert rebuilt.origin == "program" and np.allclose(rebuilt.predict(X, y, xq), c.predict(X, y, xq), rtol=0, atol=0)


def test_the_program_round_trips_bit_for_bit():
    """A program read back from its JSON compiles to the same weights (every shipped one too)."""
    from iclkit import constructions as C
    from iclkit.primitives import compile_program

    for c in (C.sgd(2, 3, lr=0.05, mode="faithful"), C.ridge(2, 3, lam=0.1), C.gd(2, 3, lr=0.05),
              from_program(normalised_sum(), name="u", d=D, n=N)):
        again = Program.from_dict(json.loads(json.dumps(c.compiled.program.to_dict())))
        built = compile_program(again, max_len=2 * c.n + 2, mode=c.mode, levels=c.compiled.context.levels, output="yhat")
        assert built.model.cfg == c.model.cfg
        for name, tensor in c.model.state_dict().items():
            assert torch.equal(built.model.state_dict()[name], tensor), name


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_the_property_holds_for_a_user_construction(mode):
    """verify.properties.within_certificate_or_refused takes a construction, not a name."""
    from hypothesis import settings

    from iclkit.verify.numeric import check_construction
    from iclkit.verify.properties import within_certificate_or_refused

    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N, closed_form=closed_form, mode=mode)
    settings(max_examples=10, deadline=None, derandomize=True, database=None)(within_certificate_or_refused(c))()
    row = check_construction(c, trials=8)
    assert row.status == "pass" and row.max_error <= row.certificate, row


def test_iclkit_export_takes_a_saved_user_construction(tmp_path):
    """`iclkit export FILE --out DIR` in a fresh process: the file's program is rebuilt, the
    GPT-2 reloaded from disk agrees with the program's exact value within 1e-8 (1 + |y_hat|)."""
    pytest.importorskip("transformers")
    c = from_program(normalised_sum(), name="normalised_sum", d=D, n=N)
    c.save(tmp_path / "user.safetensors")
    out = run_cli("export", str(tmp_path / "user.safetensors"), "--out", str(tmp_path / "gpt2"))
    assert out.returncode == 0 and "against its program's exact value" in " ".join(out.stdout.split()), out.stdout + out.stderr
    from iclkit import cli

    with cli.console.capture() as printed:  # options of a construction by name, given with a file: refused
        rc = cli.main(["export", str(tmp_path / "user.safetensors"), "--d", "2", "--out", str(tmp_path / "x")])
    assert rc == 2 and "are for a construction by name" in printed.get()

