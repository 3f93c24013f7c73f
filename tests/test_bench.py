"""The interpretability benchmark: its ground truth checked by ablation, its scorer, its
baselines, and its case files (docs/benchmark.md)."""

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

from iclkit.bench import methods
from iclkit.bench.cases import CaseSpec, load_case, make_case, variables, write_case
from iclkit.bench.score import score, score_variables
from iclkit.bench.suite import check_truth

# one of each mechanism: products and shifted reads (sgd, both modes), a division and its pads
# (ridge), a hinge (lasso); benchmarks/bench.py checks the whole default grid the same way
SMALL = [CaseSpec("sgd", 2, 2), CaseSpec("ridge", 2, 2), CaseSpec("lasso", 2, 2, params={"steps": 2}),
         CaseSpec("sgd", 2, 2, "faithful")]


@pytest.fixture(scope="module")
def sgd_case():
    return make_case(SMALL[0])


@pytest.mark.parametrize("spec", SMALL, ids=lambda s: s.case_id)
def test_the_truth_is_true(spec):
    """Every circuit edge, resampled alone on held-out prompts, moves a prediction beyond the
    certified bound; every other edge, all resampled at once, leaves every prediction within it."""
    result = check_truth(make_case(spec))
    assert result["weak_edges"] == [], result
    assert result["outside_ok"], result
    assert result["smallest_break"] > result["bound"] and result["truth_edges"] > 0 and result["other_edges"] > 0


def test_a_wrong_label_fails_the_truth_checks(sgd_case):
    """A circuit edge left out of the truth is then ablated with the others and breaks the
    prediction; an edge outside the circuit added to the truth does not break it alone."""
    case = make_case(SMALL[0])
    edge = sorted(case.circuit.truth)[0]
    case.circuit.truth.discard(edge)
    assert not check_truth(case)["outside_ok"]
    case = make_case(SMALL[0])
    extra = next(e for e in case.circuit.all_edges() if e not in case.circuit.truth)
    case.circuit.truth.add(extra)
    assert check_truth(case)["weak_edges"] == [extra]


def test_a_product_with_a_zero_factor_carries_nothing(sgd_case):
    """SGD's first step computes err = w0 . x with w0 = 0 (aff(w <- b), b = 0): layer 0's MLP
    writes a constant, so it is outside the circuit, though its weights read x."""
    circuit = sgd_case.circuit
    assert "mul(err <- w, x)" in circuit.node("L0.MLP").ops and "x" in circuit.node("L0.MLP").reads
    assert "L0.MLP" not in circuit.truth_nodes and "L1.MLP" in circuit.truth_nodes


def test_the_scorer():
    """AUC 1 for scores that rank the truth first, 0 reversed, 0.5 for ties; TPR at FPR 0.1;
    every candidate must be scored."""
    case = make_case(SMALL[0])
    edges, truth = case.circuit.all_edges(), case.circuit.truth
    perfect = {e: float(e in truth) for e in edges}
    assert score(case.circuit, perfect)["auc"] == 1.0 and score(case.circuit, perfect)["tpr_at_fpr_0.1"] == 1.0
    assert score(case.circuit, {e: -v for e, v in perfect.items()})["auc"] == 0.0
    assert score(case.circuit, {e: 0.0 for e in edges})["auc"] == 0.5
    one_wrong = dict(perfect) | {next(e for e in edges if e not in truth): 2.0}  # one false positive on top
    result = score(case.circuit, one_wrong)
    assert result["auc"] == pytest.approx(1 - 1 / (len(edges) - len(truth)))  # that negative outranks every positive
    assert result["tpr_at_fpr_0.1"] == 1.0
    with pytest.raises(ValueError, match="1 missing"):
        score(case.circuit, {e: 1.0 for e in edges[1:]})
    nodes = {n.name: float(n.name in case.circuit.truth_nodes) for n in case.circuit.nodes if n.kind in ("head", "mlp")}
    assert score(case.circuit, nodes)["level"] == "node" and score(case.circuit, nodes)["auc"] == 1.0


def test_edge_patching_and_eap_recover_the_sgd_circuit(sgd_case):
    """On the smallest case both rank every circuit edge above every other (AUC 1): the
    batched per-receiver patching agrees with one-at-a-time ablation."""
    patched = methods.edge_patching(sgd_case)
    assert score(sgd_case.circuit, patched)["auc"] == 1.0
    e = sorted(sgd_case.circuit.truth)[3]
    from iclkit.bench.patching import predictions, run

    c = sgd_case.construction
    clean, corrupt = c.encode(*sgd_case.clean), c.encode(*sgd_case.corrupt)
    with torch.no_grad():
        base, bad = run(c.model, sgd_case.circuit, clean).yhat, run(c.model, sgd_case.circuit, corrupt)
        forward = c.model(clean)[:, -1]
    assert float((base - forward).abs().max()) <= sgd_case.bound  # unablated: the forward pass, heads summed apart
    assert float((base - torch.tensor(sgd_case.exact)).abs().max()) <= sgd_case.bound
    alone = float((predictions(c.model, sgd_case.circuit, clean, bad, {e}) - base).abs().mean())
    assert patched[e] == pytest.approx(alone, rel=1e-9)
    assert score(sgd_case.circuit, methods.edge_attribution_patching(sgd_case))["auc"] == 1.0


def test_probes_find_each_variable_where_the_residual_holds_it(sgd_case):
    """x@1 (x moved into the y column) is read exactly from the residual after layer 0; the
    scores rank the layers holding each variable first."""
    found = variables(sgd_case)
    r2 = methods.linear_probes(sgd_case, found)
    assert r2[("x@1", 0)] > 1 - 1e-9
    decodable = [v for v in found if (v["name"], 0) in r2]
    layers = sgd_case.construction.num_layers
    assert score_variables(decodable, r2, layers)["auc"] == 1.0
    with pytest.raises(ValueError, match="missing"):  # a method may not drop a variable's hard layers
        score_variables(decodable, {k: v for k, v in r2.items() if k != ("x@1", 2)}, layers)
    with pytest.raises(ValueError, match="unknown"):
        score_variables(decodable, r2 | {("zz", 0): 1.0}, layers)


def test_ols_is_refused_as_a_case_with_its_reason():
    """OLS runs Newton to convergence: a perturbed early iterate is corrected, so edges on the
    prompt's path do not move y_hat, and the derived truth would be false: refused, naming it."""
    with pytest.raises(ValueError, match="fails the ablation checks, so it is no benchmark case"):
        make_case(CaseSpec("ols", 2, 2))


def test_a_case_directory_round_trips_and_refuses_an_edited_circuit(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    case = make_case(SMALL[0])
    out = write_case(case, tmp_path / "case")
    again = load_case(out)
    assert again.circuit.truth == case.circuit.truth and np.array_equal(again.clean[0], case.clean[0])
    model = GPT2LMHeadModel.from_pretrained(out / "gpt2", torch_dtype=torch.float64)
    W_E = load_file(out / "gpt2" / "embed.safetensors")["W_E"]
    with torch.no_grad():
        yhat = model(inputs_embeds=case.construction.encode(*case.clean) @ W_E).logits[:, -1, 0].numpy()
    assert np.max(np.abs(yhat - case.exact)) <= case.bound  # the export computes the case's algorithm
    if importlib.util.find_spec("transformer_lens"):  # TransformerLens loads the case as it is, unprocessed
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(str(out / "gpt2"), dtype=torch.float64)
        tokens = case.construction.encode(*case.clean) @ W_E
        with torch.no_grad():
            assert np.max(np.abs(bridge(tokens)[:, -1, 0].numpy() - case.exact)) <= case.bound
            bridge.process_weights()  # folding LayerNorm and centring move the labelled coordinates: wrong
            assert np.max(np.abs(bridge(tokens)[:, -1, 0].numpy() - case.exact)) > 1e-3
    nodes = json.loads((out / "circuit.json").read_text())["gpt2"]
    assert nodes["L2.H1"] == {"block": 2, "module": "transformer.h.2.attn", "head": 1}
    card = (out / "README.md").read_text()
    assert "load_case" in card
    snippet = card.split("```python\n")[2].split("```")[0]  # the card's GPT-2 example, run where the case is
    scope = {}
    with monkeypatch.context() as m:
        m.chdir(out)
        exec(snippet, scope)
    assert np.max(np.abs(scope["yhat"].detach().numpy() - case.exact)) <= case.bound
    for name, edit, message in [
            ("edge", lambda d: d["edges"][0].update(in_circuit=not d["edges"][0]["in_circuit"]), "its edges differ"),
            ("head", lambda d: d["gpt2"]["L0.H0"].update(head=7), "its gpt2 differ")]:
        edited = shutil.copytree(out, tmp_path / name)
        data = json.loads((edited / "circuit.json").read_text())
        edit(data)
        (edited / "circuit.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            load_case(edited)
    (edited / "circuit.json").write_text("[]")
    with pytest.raises(ValueError, match="expected an object of format"):
        load_case(edited)
    prompts = dict(np.load(out / "prompts.npz"))
    for name, change, message in [("far", {"X": prompts["X"] * 100}, "outside the construction's domain"),
                                  ("same", {"X_corrupt": prompts["X"], "y_corrupt": prompts["y"],
                                            "xq_corrupt": prompts["xq"]}, "must pair with a different clean one")]:
        edited = shutil.copytree(out, tmp_path / name)
        np.savez(edited / "prompts.npz", **(prompts | change))
        with pytest.raises(ValueError, match=message):
            load_case(edited)


def test_bench_build_and_run_from_the_command_line(tmp_path, capsys):
    from iclkit.cli import main

    assert main(["bench", "build", "--out", str(tmp_path / "b"), "--quick", "--no-export"]) == 0
    assert main(["bench", "run", str(tmp_path / "b"), "--out", str(tmp_path / "t.md")]) == 0
    table = (tmp_path / "t.md").read_text()
    assert table.count("| sgd-d2-n2-fused |") == 4 and "| EAP |" in table
    assert main(["bench", "run", str(tmp_path / "nothing")]) == 2  # a one-line error, not a traceback


def test_draw_writes_a_picture_of_every_layer(tmp_path):
    pytest.importorskip("matplotlib")
    from iclkit.cli import main

    assert main(["draw", "sgd", "--d", "2", "--n", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["draw", "sgd", "--d", "2", "--n", "4", "--out", str(tmp_path / "b.png")]) == 0
    small, large = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert small[:8] == large[:8] == b"\x89PNG\r\n\x1a\n"
    width = lambda png: int.from_bytes(png[16:20], "big")  # noqa: E731 (the IHDR chunk)
    assert width(large) > 1.5 * width(small)  # 9 layers drawn against 5


@pytest.mark.parametrize("mode", ["fused", "faithful"])
def test_a_user_program_becomes_a_case_whose_truth_holds(mode, tmp_path):
    """A program written with the public API (a mean, an attention-side divisor, a division)
    gets a case like a shipped construction: its circuit derived and checked, written, read back."""
    from test_user_construction import closed_form, normalised_sum

    from iclkit.constructions import from_program

    c = from_program(normalised_sum(), name="normalised_sum", d=2, n=3, closed_form=closed_form, mode=mode)
    case = make_case(c)
    assert case.spec_id == f"normalised_sum-d2-n3-{mode}"
    result = check_truth(case)
    assert result["weak_edges"] == [] and result["outside_ok"] and result["truth_edges"] > 0
    again = load_case(write_case(case, tmp_path / "case", export=False))
    assert again.circuit.truth == case.circuit.truth
