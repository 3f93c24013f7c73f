"""Trained learners, prompts, probes and the experiment commands, at toy sizes (seconds)."""

import json

import numpy as np
import pytest
import torch

from iclkit.cli import main
from iclkit.constructions.base import prompt_tokens
from iclkit.empirical import metrics, probes
from iclkit.empirical.learners import Learner, LearnerSpec, dim_at, init_model, loss_on, lr_at, train
from iclkit.empirical.prompts import Prompts, tokens

TINY = LearnerSpec(d=2, n=4, layers=1, width=16, heads=2, steps=30, batch=16, seed=3)


def test_tokens_put_x_and_y_where_the_constructions_do():
    X = np.arange(6.0).reshape(1, 3, 2)
    y = np.array([[10.0, 20.0, 30.0]])
    t = tokens(X, y)
    assert t.shape == (1, 7, 3) and torch.all(t[0, 0] == 0)
    assert t[0, 1].tolist() == [0.0, 0.0, 1.0] and t[0, 2].tolist() == [10.0, 0.0, 0.0]
    assert t[0, 5].tolist() == [0.0, 4.0, 5.0] and t[0, 6].tolist() == [30.0, 0.0, 0.0]
    # the constructions' prompt is the same tokens, then the query
    assert np.array_equal(t.numpy(), prompt_tokens(X, y, np.zeros((1, 2)))[:, :-1])


def test_prompt_distribution():
    dist = Prompts(3, tau=2.0, sigma=0.5, x_shift=2.5)
    X, y, w = dist.sample(np.random.default_rng(0), 4000, 5)
    assert abs(X.mean() - 2.5) < 0.05 and abs(w.std() - 2.0) < 0.1
    noise = y - np.einsum("bnd,bd->bn", X, w)
    assert abs(noise.std() - 0.5) < 0.02
    assert dist.bayes_lam == 0.0625
    Xt, yt = dist.sample_tensors(torch.Generator().manual_seed(0), 4000, 5, dim=2)  # the training sampler
    assert abs(Xt[..., :2].mean().item() - 2.5) < 0.05 and torch.all(Xt[..., 2] == 0)
    # Var y = tau^2 E|x_{1:2}|^2 + sigma^2 = 58.25; the estimate over 4000 prompts has sd about 2
    assert abs(yt.var().item() - (4 * 2 * 7.25 + 0.25)) < 6
    with pytest.raises(ValueError, match="tau"):
        Prompts(3, tau=0.0)


def test_schedule_and_curriculum():
    spec = LearnerSpec(steps=100, lr=1e-3, warmup=0.2, curriculum=0.5, d=4)
    assert lr_at(spec, 0) == pytest.approx(1e-3 / 20) and lr_at(spec, 19) == pytest.approx(1e-3)
    assert lr_at(spec, 60) == pytest.approx(0.5e-3)  # half way through the cosine
    assert [dim_at(spec, s) for s in (0, 12, 13, 25, 37, 38, 99)] == [1, 1, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="multiple of heads"):
        LearnerSpec(width=10, heads=4)


def test_steps_on_one_batch_lower_its_loss():
    model = init_model(TINY)
    X = torch.randn(32, TINY.n, TINY.d)
    y = X @ torch.ones(TINY.d)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = loss_on(model, X, y).item()
    for _ in range(30):
        loss = loss_on(model, X, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_on(model, X, y).item() < 0.5 * before


def test_training_is_seeded_and_checkpoints_round_trip(tmp_path):
    a = train(TINY, checkpoint=tmp_path / "a.safetensors", progress=False, log_every=10)
    b = train(TINY, progress=False, log_every=10)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    loaded = Learner.load(tmp_path / "a.safetensors")
    assert loaded.spec == TINY and loaded.steps_done == 30 and loaded.losses == a.losses and len(a.losses) == 3
    X, y, _ = TINY.prompts.sample(np.random.default_rng(0), 5, TINY.n)
    assert np.array_equal(loaded.predict(X, y), a.predict(X, y))


def test_prefix_predictor_reads_the_query_at_the_next_x_position():
    learner = Learner(init_model(TINY), TINY)
    with torch.no_grad():  # a non-trivial model: random weights, not the small init
        for p in learner.model.parameters():
            p.normal_(0, 0.5)
    X, y, _, Q = TINY.prompts.sample(np.random.default_rng(1), 3, TINY.n, 5)
    Q[:, :, 0] = X  # query 0 at prefix i is the prompt's own x_{i+1}
    pred = learner.predictor()(X, y, Q)
    np.testing.assert_allclose(pred[:, :, 0], learner.predict(X, y), rtol=1e-5, atol=1e-6)
    X2, y2 = X.copy(), y.copy()
    X2[:, 2:], y2[:, 2:] = 7.0, -7.0  # later examples must not change earlier prefixes
    assert np.array_equal(learner.predictor()(X2, y2, Q)[:, :3], pred[:, :3])
    with pytest.raises(ValueError, match="at most 4 examples"):
        learner.predict(np.zeros((1, 5, 2)), np.zeros((1, 5)))


def test_a_linear_probe_finds_a_linearly_stored_target():
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(600, 5, 8, generator=gen)
    target = states[:, 3, :2] @ torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    p = probes.fit(states[:500], target[:500], "linear", steps=800, seed=0, lr=1e-2)
    with torch.no_grad():
        unexplained = ((p(states[500:]) - target[500:]) ** 2).mean() / target[500:].var(0).mean()
    assert unexplained < 0.02  # position 3 must be found by the learned attention
    assert torch.softmax(p.scores, 0).argmax() == 3


def test_probe_targets():
    X, y, _ = Prompts(2).sample(np.random.default_rng(0), 3, 4)
    v = probes.target_values(X, y, 3)
    np.testing.assert_allclose(v["XTy"][1], X[1, :3].T @ y[1, :3])
    np.testing.assert_allclose(X[1, :3] @ v["w_OLS"][1], y[1, :3], atol=1e-12)  # noiseless: interpolates


def tiny_args(out, cache):
    return ["--d", "2", "--n", "4", "--layers", "1", "--width", "8", "--heads", "2", "--steps", "20",
            "--batch", "8", "--out", str(out), "--cache", str(cache)]


def test_the_five_commands_write_their_outputs(tmp_path):
    cache = tmp_path / "cache"
    assert main(["train", *tiny_args(tmp_path / "train", cache), "--log-every", "5"]) == 0
    record = json.loads((tmp_path / "train" / "train.json").read_text())
    assert len(record["losses"]) == 4 and record["ols_loss"] == pytest.approx((1 + 0.5) / 4)
    assert main(["compare", *tiny_args(tmp_path / "compare", cache), "--prompts", "8", "--queries", "4"]) == 0
    result = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert set(result["against"]) >= {"OLS", "Ridge(0.1)", "GD(0.01)", "kNN(3)", "Constructed ridge(0.1)"}
    # the harness checks itself: each construction against its own algorithm, squared errors ~1e-20
    assert max(result["self_check_max_spd"].values()) < 1e-16
    assert main(["noise-sweep", *tiny_args(tmp_path / "noise", cache), "--ratios", "0", "0.25", "--lams", "0", "0.25"]) == 0
    sweep = json.loads((tmp_path / "noise" / "noise_sweep.json").read_text())
    assert np.array(sweep["mspd_over_d"]).shape == (2, 2)
    assert main(["phase", *tiny_args(tmp_path / "phase", cache), "--depths", "1", "--widths", "8"]) == 0
    assert main(["probe", *tiny_args(tmp_path / "probe", cache), "--prefixes", "2", "--probe-steps", "5"]) == 0
    rows = (tmp_path / "probe" / "probe.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2  # header + (2 layers) x (2 targets) x (linear, mlp)
    for folder, name in [("train", "train"), ("compare", "compare"), ("noise", "noise_sweep"), ("phase", "phase"), ("probe", "probe")]:
        assert (tmp_path / folder / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / folder / f"{name}.csv").exists()


def test_metrics_bootstrap_brackets_the_mean():
    per_prompt = np.random.default_rng(0).exponential(size=(200, 3))
    lo, hi = metrics.bootstrap(per_prompt)
    assert np.all(lo < per_prompt.mean(0)) and np.all(per_prompt.mean(0) < hi)


def test_fine_tuning_starts_from_the_parent_weights():
    from dataclasses import replace

    from iclkit.empirical.learners import spec_id

    parent = train(TINY, progress=False)
    child = replace(TINY, steps=1, lr=1e-4, sigma=0.5, start=spec_id(TINY))
    with pytest.raises(ValueError, match="pass that learner as start"):
        train(child, progress=False)
    tuned = train(child, progress=False, start=parent)
    for p, q in zip(parent.model.parameters(), tuned.model.parameters()):
        assert (p - q).abs().max() <= 1e-4 * 1.001  # one Adam step moves each weight by at most lr
    assert any(not torch.equal(p, q) for p, q in zip(parent.model.parameters(), tuned.model.parameters()))
