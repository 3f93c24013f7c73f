"""The iclkit command: verify (the main job), sizes, build, run, prove, export, draw, bench; and the
empirical experiments train, compare, noise-sweep, phase, probe. `iclkit COMMAND -h` lists a command's
options with their defaults."""

from __future__ import annotations

import argparse
import inspect
import sys

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from iclkit.constructions import REGISTRY

console = Console(width=None if sys.stdout.isatty() else 100)  # the tables fit 100 columns
DEFAULT_CASES = [(2, 1), (8, 1), (8, 8)]  # the paper's constructions: one block, and stacked
LITERATURE_CASES = [(2, 8), (4, 20)]  # beyond the paper (the d = 8, n = 40 grid: benchmarks/literature.py)
PAPER = ("sgd", "gd", "ridge")


def _integer(least: int):
    """An argparse type: an integer >= ``least`` (a bad value is a one-line usage error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value
    parse.__name__ = f"integer >= {least}"
    return parse


def _real(least: float | None = None, strict: bool = False):
    """An argparse type: a finite real number (>= ``least``, or > it with ``strict``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {value}")
        if least is not None and (value <= least if strict else value < least):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {least:g}, got {value:g}")
        return value
    parse.__name__ = "number"
    return parse


POSITIVE, NATURAL = _integer(1), _integer(0)


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else "inf"


def _count(k: int) -> str:
    """A parameter count in at most six characters: 20,302 -> 20.3k, 8,870,597 -> 8.87M."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if k >= size:
            return f"{k / size:.3g}{unit}"
    return str(k)


def _table(title: str, *columns: str) -> Table:
    """A results table that fits 100 columns: right-justified cells, rules only under the header."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0, 0, 1))
    for col in columns:
        table.add_column(col, justify="right")
    return table


def cmd_verify(args: argparse.Namespace) -> int:
    if args.symbolic:
        return cmd_prove(args)
    if args.property:
        from iclkit.verify.properties import run_properties

        return run_properties(args.examples, console, args.only)
    from iclkit.verify.numeric import check

    def cases(name: str) -> list[tuple[int, int]]:
        if args.d or args.n:  # a missing one takes the defaults' values
            return [(d, n) for d in (args.d or [8]) for n in (args.n or [1, 8])]
        return DEFAULT_CASES if name in PAPER else LITERATURE_CASES

    jobs = [(name, mode, d, n) for name in args.constructions for d, n in cases(name) for mode in args.modes]
    table = _table(f"iclkit verify ({args.dtype}, seed {args.seed}, {args.trials} prompts each)",
                   "name", "mode", "d", "n", "layers", "params", "max error", "cert.", "bound", "rel. error", "target",
                   "status")
    failed, checked, refusals = 0, 0, []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("verifying", total=len(jobs))
        for name, mode, d, n in jobs:
            progress.update(task, description=f"{name} {mode} d={d} n={n}")
            try:
                row = check(name, d, n, dtype=args.dtype, mode=mode, seed=args.seed, trials=args.trials)
            except ValueError as e:  # refused at build (e.g. float32 cannot size it): a reason, not a number
                table.add_row(name, mode, str(d), str(n), *["-"] * 7, f"[yellow]refused[/]: {e}")
                progress.advance(task)
                continue
            checked += 1
            failed += row.status == "FAIL"
            if row.refused:
                refusals.append(f"{name} {mode} d={d} n={n}: {row.refused}")
            table.add_row(name, mode, str(d), str(n), str(row.layers), _count(row.parameters),
                          _fmt(row.max_error), _fmt(row.certificate), _fmt(row.bound) + ("*" if row.runtime_guard else ""),
                          _fmt(row.max_relative), f"{row.target:.0e}",
                          {"pass": "[green]pass[/]", "no bound": "[yellow]no bound[/]", "FAIL": "[red]FAIL[/]"}[row.status]
                          + (f" ({row.outside} outside)" if row.outside else ""))
            progress.advance(task)
    console.print(table)
    if checked == 0:
        console.print("[red]nothing was checked[/]: every construction was refused at build")
        return 1
    for refusal in refusals:
        console.print(f"[red]refused in-domain prompts[/] {refusal}")
    console.print("layers: applied; params: stored; cert.: the largest per-prompt certificate; bound: the "
                  "domain-wide bound; rel. error: max |y_hat - y_hat*| / (1 + |y_hat*|) against the closed form. "
                  "pass = every prompt's error <= its own finite per-prompt certificate and <= the finite "
                  "domain-wide bound, and relative error <= the accuracy target; no bound = the same, but the domain-wide "
                  "bound derived for this construction and size is infinite or vacuous (at least the domain's bound on "
                  "|y_hat|): not a pass, not a failure; * = the a-priori bound cannot promise the accuracy "
                  "target, so predict certifies each prediction as it runs and refuses one whose certificate exceeds "
                  "the target (1e-8 (1 + |y_hat|) in float64, 1e-3 in float32); the bound shown is that target at the "
                  "domain's largest |y_hat|; (k outside) = k sampled prompts the construction refuses by name as outside "
                  "its domain (ols: too ill-conditioned for its Newton steps), not counted")
    return 1 if failed else 0


def cmd_sizes(args: argparse.Namespace) -> int:
    from iclkit.verify.numeric import default_params

    table = _table("construction sizes (n = 1 is the paper's single block)", "name", "mode", "d", "n", "layers",
                   "stored", "heads", "width", "rows", "mlp", "params", "paper layers", "paper rows")
    for name in args.constructions:
        for d in args.d or [1, 2, 4, 8]:
            for n in args.n or [1]:
                for mode in args.modes:
                    c = REGISTRY[name](d, n, mode=mode, **default_params(name, d))
                    s = c.sizes()
                    paper = c.paper
                    table.add_row(name, mode, str(d), str(n), str(s["layers"]), str(s["stored layers"]),
                                  str(s["heads"]), str(s["residual width"]),
                                  str(s["program rows"]), str(s["mlp width"]), _count(s["parameters"]),
                                  str(paper.get("layers") or "-"), str(paper.get("rows") or "-"))
    console.print(table)
    console.print("layers: applied; stored: distinct layers held (a looped block once); width: the residual's; "
                  "rows: the program's slots; mlp: hidden units; params: stored")
    return 0


def _construction(args: argparse.Namespace):
    """The construction named on the command line, with the paper's parameters where not given,
    or the one a saved model file holds (checked against its header, its program and every
    tensor)."""
    from pathlib import Path

    from iclkit.constructions.saved import load_construction
    from iclkit.verify.numeric import default_params

    if args.construction not in REGISTRY:
        if not Path(args.construction).is_file():
            raise ValueError(f"{args.construction!r} is neither a construction iclkit ships ({', '.join(REGISTRY)}) "
                             "nor a saved model file")
        given = [f"--{k}" for k in ("d", "lr", "lam", "steps", "l1") if getattr(args, k) is not None]
        if given:
            raise ValueError(f"options {', '.join(given)} are for a construction by name; a saved file carries its own")
        return load_construction(args.construction)
    if args.d is None:
        raise ValueError(f"--d is required for the {args.construction} construction")

    given = {k: getattr(args, k) for k in ("lr", "lam", "steps", "l1") if getattr(args, k) is not None}
    defaults = default_params(args.construction, args.d)
    options = {"lr", "lam", "steps", "l1"}  # what the command line can set
    takes = options & set(inspect.signature(REGISTRY[args.construction]).parameters)
    if set(given) - takes:
        raise ValueError(f"{args.construction} takes {sorted(takes)}, not {sorted(given)}")
    kw = defaults | given
    return REGISTRY[args.construction](args.d, args.n, dtype=args.dtype, mode=args.mode[0], **kw)


def cmd_export(args: argparse.Namespace) -> int:
    """Export to a Hugging Face GPT-2 directory, reload it from disk and check it on seeded prompts."""
    try:
        import torch
        from transformers import GPT2LMHeadModel

        from iclkit.export import to_hf_gpt2
    except ImportError as e:
        raise ValueError(f"export needs the [export] extra (pip install -e '.[export]'): {e}") from None
    from iclkit.verify.numeric import closed_form, domain_problems

    c = _construction(args)
    _, W_E = to_hf_gpt2(c, args.out)
    model = GPT2LMHeadModel.from_pretrained(args.out, torch_dtype=torch.float64).eval()
    X, y, xq = domain_problems(c, 8, seed=0)
    tokens = c.compiled.tokens(c.inputs(X, y, xq))
    with torch.no_grad():
        yhat = model(inputs_embeds=tokens @ W_E).logits[:, -1, 0].numpy()
    exact = closed_form(c, X, y, xq)
    err = float(np.max(np.abs(yhat - exact)))
    against = (f"iclkit.algorithms.{c.name}" if c.origin == "iclkit" else
               "its closed form" if c.closed_form is not None else "its program's exact value")
    console.print(f"wrote {args.out}: GPT-2, {model.config.n_layer} layers, n_embd {model.config.n_embd}, "
                  f"{model.config.n_head} heads; reloaded from disk, 8 seeded prompts: max error {err:.2e} against "
                  f"{against} (measured: the export adds no certificate; the construction's a-priori "
                  f"bound is {c.a_priori_bound:.2e}, and it has no run-time guard outside iclkit)")
    return 0 if err <= 1e-8 * (1 + float(np.max(np.abs(exact)))) else 1


def _bound(c) -> str:
    """The certified bound, saying when the run-time guard enforces it."""
    if not c.guarded:
        return _fmt(c.error_bound)
    return f"{_fmt(c.error_bound)} (run-time guard; a priori {_fmt(c.a_priori_bound)})"


def cmd_build(args: argparse.Namespace) -> int:
    c = _construction(args)
    c.save(args.out)
    console.print(f"wrote {args.out}: {args.construction} d={args.d} n={args.n}, {c.num_layers} layers applied "
                  f"({c.model.cfg.stored_layers} stored), {c.model.num_parameters():,} parameters stored, width {c.width}, "
                  f"certified bound {_bound(c)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from iclkit.constructions.saved import load_construction
    from iclkit.verify.numeric import domain_problems

    c = load_construction(args.file)
    d, n = c.d, c.n
    if args.prompts:
        data = np.load(args.prompts)
        missing = [k for k in ("X", "y", "xq") if k not in data.files]
        if missing:
            raise ValueError(f"{args.prompts}: a prompts file holds arrays X, y and xq; it lacks {', '.join(missing)} "
                             f"(it has {', '.join(data.files) or 'nothing'})")
        X, y, xq = data["X"], data["y"], data["xq"]
    else:
        X, y, xq = domain_problems(c, args.batch, args.seed)
    pred = np.atleast_1d(c.predict(X, y, xq))  # the same guard as predict: a prompt off the domain is refused
    cert = np.atleast_1d(c.certify(X, y, xq))
    k = np.shape(X)[-2]  # a model built for n runs prompts of k <= n examples
    X, y, xq = np.reshape(X, (-1, k, d)), np.reshape(y, (-1, k)), np.reshape(xq, (-1, d))
    if c.closed_form is not None:
        exact, against = np.array([c.closed_form(X[b], y[b], xq[b]) for b in range(len(X))]), "closed form"
    else:  # a user's construction read from its file: the program it carries, in extended precision
        exact, against = np.atleast_1d(c.reference(X, y, xq)).astype(float), "program (exact)"
    table = Table(title=f"{args.file}: {c.name} d={d} n={n} ({c.num_layers} layers applied, "
                        f"{c.model.cfg.stored_layers} stored), prompts of {k} examples")
    for col in ("prompt", "transformer", against, "|difference|", "certificate"):
        table.add_column(col, justify="right")
    for b in range(len(pred)):
        table.add_row(str(b), f"{pred[b]:.12g}", f"{exact[b]:.12g}", _fmt(abs(pred[b] - exact[b])), _fmt(cert[b]))
    console.print(table)
    console.print(f"domain-wide bound: {_bound(c)}; residual slots: {', '.join(c.layout.slots)}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    if getattr(args, "file", None):
        return cmd_prove_file(args.file)
    from iclkit.verify.symbolic import run_proofs

    return run_proofs(console, max_d=getattr(args, "max_d", 3))


def cmd_prove_file(path: str) -> int:
    """Every field of a saved model's header and every tensor against the program it carries
    (iclkit.verify.weights), then that the layers compute the program."""
    from iclkit.constructions.saved import first_difference, open_construction
    from iclkit.verify.weights import WeightProofError, prove_weights

    model, c = open_construction(path)  # the header's configuration, field by field: refused by name
    try:
        found = prove_weights(model, c.compiled)
    except WeightProofError as e:
        console.print(f"[red]FAILS[/]  {e}")
        return 1
    writing = [s for s in found if bool((model.applied_layers[s.layer].W_O[s.head] != 0).any())]
    shipped = c.origin == "iclkit"
    console.print(f"[green]proved from the weights[/] ({c.name}, d={c.d}, n={c.n}, {c.mode}, {model.cfg.num_layers} "
                  f"applied layers, {model.cfg.stored_layers} stored):\n"
                  "  the header's model configuration is the program's, field by field;\n"
                  "  embedding, positional table and readout are the program's;\n"
                  f"  attention: each of {len(writing)} writing heads selects a column (or the causal mean) its "
                  f"program layer reads, off-target softmax mass <= {max((s.off_target for s in writing), default=0):.2e} "
                  "(W_Q, W_K, positional table), and per read pattern sum_h W_V W_O is the program's linear map, "
                  "overwrite, balance and pads;\n"
                  "  MLP: every hidden unit is one of the program's GeLU product units or linear pairs, with its "
                  "scales, and b_out its biases (to 8 ulps);\n"
                  "  dataflow: run as a decoder layer runs (attention on the residual before it, the MLP after), "
                  "every op reads the values the program order gives it;\n"
                  "  with the lemmas of `iclkit prove` (hard attention, products O(S^-2K), linear pairs, LayerNorm "
                  "read and division) the network computes "
                  + ("the program (whose closed form `iclkit prove` proves for d <= 3 and up to 3 examples).\n"
                     if shipped else "the program the header carries: network = program (its closed form is its "
                     "author's to prove; see docs/authoring.md).\n")
                  + "  Every applied layer is checked (a stored looped layer at each repeat): the weights' claim is "
                  f"for prompts of up to n={c.n} examples.")
    from iclkit.verify.symbolic import LOOP_PROOFS

    loop = LOOP_PROOFS.get((c.name, c.mode)) if shipped else None
    loop = loop if loop is not None and loop.applies(c) else None
    if loop and c.d <= 3:
        held = loop.prove(c.d)
        console.print(f"{'[green]proved[/]' if held else '[red]FAILS[/]'}  the program, by induction over its looped "
                      f"block (symbolic state, d={c.d}): {loop.claim}. A model built for another n differs in its "
                      "positional constants: build and prove that file.")
        if not held:
            return 1
    elif model.cfg.loop is not None:
        why = (f"the induction runs on a symbolic d x d state, proved for d <= 3 (this file has d = {c.d})"
               if loop else "iclkit has an induction proof over the looped block only for its own sgd and ridge")
        console.print(f"no claim for every n: {why}; the claim above is for this file's n = {c.n}")
    problem = first_difference(model, c)
    if problem:
        console.print(f"note: {problem}, within the proof's tolerance or unused; the numeric certificates are the "
                      "rebuilt construction's")
    return 0


# ---- the empirical experiments ------------------------------------------------------------


def _spec(args: argparse.Namespace):
    from iclkit.empirical.learners import LearnerSpec

    fields = ("d", "n", "layers", "width", "heads", "steps", "batch", "lr", "curriculum", "seed")
    return LearnerSpec(**{f: getattr(args, f) for f in fields}, sigma=args.sigma)


def _write(out: str, name: str, result: dict, header: list[str], rows: list[list], plot) -> None:
    """``<out>/<name>.json`` (everything), ``<name>.csv`` (the table) and ``<name>.png``
    (``plot(result, path)``)."""
    import csv
    import json
    from pathlib import Path

    Path(out).mkdir(parents=True, exist_ok=True)
    plot(result, Path(out, f"{name}.png"))
    Path(out, f"{name}.json").write_text(json.dumps(result, indent=1))
    with open(Path(out, f"{name}.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    console.print(f"wrote {out}/{name}.json, {name}.csv, {name}.png")


def _learner(args: argparse.Namespace):
    """``--model`` if given, else the learner of the spec options from the cache (trained if absent)."""
    from iclkit.empirical.experiments import obtain
    from iclkit.empirical.learners import Learner

    if args.model:
        return Learner.load(args.model)
    return obtain(_spec(args), args.cache, log=console.print)


def cmd_train(args: argparse.Namespace) -> int:
    import shutil
    from dataclasses import asdict
    from pathlib import Path

    from iclkit.empirical import plots
    from iclkit.empirical.experiments import cache_path
    from iclkit.empirical.learners import ols_loss, train

    spec = _spec(args)
    cached = cache_path(spec, args.cache)
    cached.parent.mkdir(parents=True, exist_ok=True)
    learner = train(spec, checkpoint=cached, log_every=args.log_every)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    shutil.copy(cached, Path(args.out, "learner.safetensors"))
    optimum = ols_loss(spec)
    result = {"spec": asdict(spec), "seconds": learner.seconds, "log_every": args.log_every, "losses": learner.losses,
              "final_loss": learner.losses[-1], "ols_loss": optimum, "parameters": learner.model.num_parameters()}
    _write(args.out, "train", result, ["step", "loss_over_d"],
           [[(i + 1) * args.log_every, v] for i, v in enumerate(learner.losses)], plots.loss_curve)
    console.print(f"trained in {learner.seconds:.0f} s; final loss/d {learner.losses[-1]:.4f}"
                  + (f" (OLS: {optimum:.4f})" if optimum is not None else "") + f"; model in {args.out}/learner.safetensors")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from iclkit.empirical import plots
    from iclkit.empirical.experiments import compare, compare_targets

    learner = _learner(args)
    result = compare(learner, prompts=args.prompts, queries=args.queries, x_scale=args.x_scale,
                     x_shift=args.x_shift, log=console.print)
    result["targets"] = compare_targets(result)
    rows = [[name, i, c["spd"][i], c["spd_lo"][i], c["spd_hi"][i], c["ilwd"][i], c["ilwd_lo"][i], c["ilwd_hi"][i]]
            for name, c in result["against"].items() for i in range(1, len(c["spd"]))]
    _write(args.out, "compare", result, ["predictor", "examples", "spd_over_d", "spd_lo", "spd_hi", "ilwd_over_d",
                                         "ilwd_lo", "ilwd_hi"], rows, plots.compare)
    table = Table("learner vs", "SPD/d max (n>=d)", "SPD/d mean", "ILWD/d max", "ILWD/d mean", "MSPD/d (n<d)")
    for name, s in sorted(result["summary"].items(), key=lambda kv: kv[1]["spd_mean"]):
        table.add_row(name, *(_fmt(s[k]) for k in ("spd_max", "spd_mean", "ilwd_max", "ilwd_mean", "mspd")))
    console.print(table)
    for name, v in result["self_check_max_spd"].items():
        console.print(f"self-check: {name} vs its own algorithm, max SPD/d {_fmt(v)}")
    t = result["targets"]
    console.print(f"target: SPD/d and ILWD/d to OLS <= 0.05 for n >= d: worst {_fmt(t['ols_worst'])} "
                  f"({'met' if t['ols_within_0.05'] else 'NOT met'}); OLS closest: {t['ols_closest']}")
    from iclkit.empirical.layerwise import layerwise

    layers = layerwise(learner)
    _write(args.out, "layerwise", layers, ["layer", "gd_best_k", "gd_spd_over_d", "newton_best_k", "newton_spd_over_d",
                                            "ols_spd_over_d"],
           [[r["layer"], r["gd_best_k"], r["gd_spd"], r["newton_best_k"], r["newton_spd"], r["ols_spd"]]
            for r in layers["layers"]], plots.layerwise)
    table = Table("layer", "GD: best k", "SPD/d", "Newton: best k", "SPD/d", "OLS: SPD/d",
                  title=f"which algorithm each layer follows (read-out at the query after {layers['examples']} "
                        f"examples; GD lr {layers['gd_lr']:.3g})")
    for r in layers["layers"]:
        table.add_row(str(r["layer"]), str(r["gd_best_k"]), _fmt(r["gd_spd"]), str(r["newton_best_k"]),
                      _fmt(r["newton_spd"]), _fmt(r["ols_spd"]))
    console.print(table)
    console.print(f"Newton's iterations match more closely than GD's at {layers['newton_closer_layers']} of "
                  f"{len(layers['layers'])} layers: the layers {'follow' if layers['follows_newton'] else 'do not follow'} "
                  "Newton more closely than GD")
    return 0


def cmd_noise_sweep(args: argparse.Namespace) -> int:
    from iclkit.empirical import plots
    from iclkit.empirical.experiments import noise_sweep

    result = noise_sweep(_spec(args), args.cache, ratios=tuple(args.ratios), lams=tuple(args.lams), log=console.print)
    rows = [[r, lam, v] for r, row in zip(result["ratios"], result["mspd_over_d"]) for lam, v in zip(result["lams"], row)]
    _write(args.out, "noise_sweep", result, ["noise_ratio", "lam", "mspd_over_d"], rows, plots.noise_sweep)
    table = Table("(sigma/tau)^2", *(f"lam={lam:.3g}" for lam in result["lams"]), "best lam", "on diagonal")
    for r, row, best, ok in zip(result["ratios"], result["mspd_over_d"], result["best_lam"], result["diagonal"]):
        table.add_row(f"{r:.3g}", *(_fmt(v) for v in row), f"{best:.3g}", str(ok))
    console.print(table)
    return 0


def cmd_phase(args: argparse.Namespace) -> int:
    from iclkit.empirical import plots
    from iclkit.empirical.experiments import phase

    result = phase(_spec(args), args.cache, depths=tuple(args.depths), widths=tuple(args.widths), log=console.print)
    rows = [[r["axis"], r["layers"], r["width"], f, fit["best"], fit["spd"]] for r in result["runs"] for f, fit in r["fits"].items()]
    _write(args.out, "phase", result, ["axis", "layers", "width", "family", "best_member", "spd_over_d"], rows, plots.phase)
    table = Table("sweep", "layers", "width", "GD (best)", "Ridge (best)", "OLS", "closest")
    for r in result["runs"]:
        f = r["fits"]
        table.add_row(r["axis"], str(r["layers"]), str(r["width"]), f"{_fmt(f['GD']['spd'])} {f['GD']['best']}",
                      f"{_fmt(f['Ridge']['spd'])} {f['Ridge']['best']}", _fmt(f["OLS"]["spd"]), r["closest"])
    console.print(table)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from iclkit.empirical import plots
    from iclkit.empirical.probes import probe

    learner = _learner(args)
    prefixes = tuple(args.prefixes) if args.prefixes else (learner.spec.d, learner.spec.n)
    result = probe(learner, prefixes, steps=args.probe_steps, log=console.print)
    keys = ["prefix", "target", "layer", "kind", "unexplained"]
    _write(args.out, "probe", result, keys, [[r[k] for k in keys] for r in result["results"]], plots.probe)
    return 0


LEARNER_HELP = {"d": "task dimension", "n": "examples per training prompt", "layers": "learner depth",
                "width": "residual width", "heads": "attention heads", "steps": "training steps", "batch": "prompts per step",
                "seed": "initialisation and data seed", "lr": "Adam's peak learning rate",
                "curriculum": "fraction of the steps over which the task dimension grows from 1 to d",
                "sigma": "label noise standard deviation"}


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every optional option's help ends with its default (a required one has none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.required else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A command's parser: every option's help ends with its default."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, formatter_class=_Defaults, **kwargs)


def cmd_draw(args: argparse.Namespace) -> int:
    """A PNG of the construction's layers, heads, MLPs and circuit."""
    from iclkit.draw import draw

    c = _construction(args)
    draw(c, args.out, max_layers=args.max_layers)
    console.print(f"wrote {args.out}: {c.name} d={c.d} n={c.n} {c.mode}, {c.num_layers} layers")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Build the benchmark's cases, or run and score every baseline on them."""
    from iclkit.bench import suite

    if args.bench == "build":
        from iclkit.bench.cases import CaseSpec
        from iclkit.constructions import Construction

        sources = [Construction.load(f) for f in args.files] or None  # a user's constructions, from their files
        if args.quick:
            sources = (sources or []) + [CaseSpec("sgd", 2, 2), CaseSpec("gd", 2, 3, params={"steps": 2})]
        with console.status("building cases") as status:
            checks = suite.build(args.out, sources, export=not args.no_export,
                                 progress=lambda name: status.update(f"building and checking {name}"))
        table = _table("each case's circuit, checked by resample ablation", "case", "layers", "nodes", "edges",
                       "bound", "least break", "most outside")
        for c in checks:
            table.add_row(c["case"], str(c["layers"]), f"{c['truth_nodes']}/{c['nodes']}",
                          f"{c['truth_edges']}/{c['truth_edges'] + c['other_edges']}", f"{c['bound']:.1e}",
                          f"{c['smallest_break']:.1e}", f"{c['outside_max']:.1e}")
        console.print(table)
        console.print(f"wrote {len(checks)} cases to {args.out} (iclkit bench run {args.out} scores the baselines). "
                      "nodes, edges: in the circuit / all; least break: the smallest change of y_hat when one circuit "
                      "edge is resampled; most outside: the largest when every other edge is, at once")
        return 0
    with console.status("running baselines") as status:
        rows = suite.run_all(args.dir, progress=lambda name: status.update(f"running the baselines on {name}"))
    table = _table(f"iclkit bench run {args.dir}", "case", "method", "level", "AUC", "TPR at FPR 0.1", "seconds")
    for r in rows:
        table.add_row(r["case"], r["method"], r["level"], f"{r['auc']:.3f}", f"{r['tpr_at_fpr_0.1']:.3f}",
                      f"{r['seconds']:.1f}")
    console.print(table)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text("\n".join(suite.table(rows)) + "\n")
        console.print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The iclkit command's parser: one subcommand per job, every option with help and default."""
    parser = argparse.ArgumentParser(prog="iclkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--constructions", nargs="+", default=list(REGISTRY), choices=list(REGISTRY),
                       help="which constructions")
        p.add_argument("--d", nargs="+", type=POSITIVE, default=None,
                       help="input dimensions (None: each command's own grid)")
        p.add_argument("--n", nargs="+", type=POSITIVE, default=None, help="context sizes (None: each command's own grid)")
        p.add_argument("--modes", nargs="+", default=["fused", "faithful"], choices=["fused", "faithful"],
                       help="fused: fewest layers; faithful: the paper's chain, one op per layer")
        p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="the model's float type")

    def construction_options(p: argparse.ArgumentParser, files: bool = False) -> None:  # one construction
        if files:
            p.add_argument("construction", help=f"a construction iclkit ships ({', '.join(REGISTRY)}) or a saved "
                                                "model file (iclkit build --out, or Construction.save)")
        else:
            p.add_argument("construction", choices=list(REGISTRY), help="the construction")
        p.add_argument("--d", type=POSITIVE, required=not files, default=None, help="input dimension")
        p.add_argument("--n", type=POSITIVE, default=1, help="examples per prompt the model is built for")
        p.add_argument("--lr", type=_real(0, strict=True), default=None,
                       help="step size (sgd, gd, pgd, lasso); None takes the paper's 0.01")
        p.add_argument("--lam", type=_real(0), default=None, help="the regulariser lambda (sgd, gd, ridge); None takes the paper's 0.1")
        p.add_argument("--steps", type=POSITIVE, default=None,
                       help="iterations (gd, pgd, newton, ols, lasso); None takes gd 1, pgd and newton 4, ols 12, lasso 5")
        p.add_argument("--l1", type=_real(0), default=None, help="the Lasso's l1 weight (lasso); None takes 1.0")
        p.add_argument("--mode", nargs=1, default=["fused"], choices=["fused", "faithful"],
                       help="fused: fewest layers; faithful: the paper's chain")
        p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="the model's float type")

    p = sub.add_parser("verify", help="build every construction and check it against its closed form")
    common(p)
    p.add_argument("--seed", type=NATURAL, default=0, help="seed of the sampled prompts")
    p.add_argument("--trials", type=POSITIVE, default=32, help="prompts per row")
    p.add_argument("--symbolic", action="store_true", help="run the sympy proofs instead (same as `iclkit prove`)")
    p.add_argument("--property", action="store_true", help="run the hypothesis property suites instead")
    p.add_argument("--examples", type=POSITIVE, default=200, help="hypothesis examples per property")
    p.add_argument("--only", nargs="+", default=None, metavar="PROPERTY", help="with --property: run only these")
    p.add_argument("--max-d", dest="max_d", type=POSITIVE, default=3, help="with --symbolic: the largest d proved")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("sizes", help="layers, heads, widths and parameters beside the paper's counts")
    common(p)
    p.set_defaults(fn=cmd_sizes)

    p = sub.add_parser("build", help="build one construction and save it (safetensors, with its layout)")
    construction_options(p)
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.set_defaults(fn=cmd_build)

    p = sub.add_parser("export", help="export a construction as a stock Hugging Face GPT-2 directory ([export] extra)")
    construction_options(p, files=True)
    p.add_argument("--to", default="hf-gpt2", choices=["hf-gpt2"], help="the export format")
    p.add_argument("--out", required=True, help="the directory to write")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("run", help="run a saved model on prompts (an .npz with X, y, xq) or random ones")
    p.add_argument("file", help="a saved construction (iclkit build --out, or Construction.save)")
    p.add_argument("--prompts", default=None, help="an .npz with arrays X, y, xq (None: random prompts in the domain)")
    p.add_argument("--batch", type=POSITIVE, default=8, help="random prompts to run")
    p.add_argument("--seed", type=NATURAL, default=0, help="seed of the random prompts")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("prove", help="symbolic proofs (sympy) of every primitive and both theorems; with FILE, "
                                     "what a saved model's weights show")
    p.add_argument("file", nargs="?", default=None, help="a saved construction (iclkit build --out)")
    p.add_argument("--max-d", dest="max_d", type=POSITIVE, default=3, help="the largest d proved")
    p.set_defaults(fn=cmd_prove)

    p = sub.add_parser("draw", help="a picture (PNG) of which heads and MLPs each layer uses, and the circuit")
    construction_options(p, files=True)
    p.add_argument("--out", required=True, help="the image to write (PNG; matplotlib takes the format from the name)")
    p.add_argument("--max-layers", dest="max_layers", type=POSITIVE, default=40, help="layers drawn at most")
    p.set_defaults(fn=cmd_draw)

    p = sub.add_parser("bench", help="a benchmark for interpretability methods: cases with known circuits, baselines")
    bench = p.add_subparsers(dest="bench", required=True, parser_class=_Parser, help="build the cases, or run the baselines")
    q = bench.add_parser("build", help="write every case: model, GPT-2 export, circuit, variables, prompts, card")
    q.add_argument("--out", required=True, help="the directory to write the cases into")
    q.add_argument("--quick", action="store_true", help="two small cases only: sgd-d2-n2-fused, gd-k2-d2-n3-fused")
    q.add_argument("--files", nargs="+", default=[], metavar="FILE",
                   help="saved constructions (Construction.save, iclkit build) to make cases of, instead of the grid")
    q.add_argument("--no-export", dest="no_export", action="store_true",
                   help="skip the GPT-2 export (no [export] extra needed)")
    q = bench.add_parser("run", help="run and score every baseline on every case of a built benchmark")
    q.add_argument("dir", help="a directory written by iclkit bench build")
    q.add_argument("--out", default=None, help="also write the results as a markdown table to this file")
    p.set_defaults(fn=cmd_bench)

    def learner_options(p: argparse.ArgumentParser, out: str) -> None:
        from iclkit.empirical.learners import LearnerSpec

        default = LearnerSpec()
        for name in ("d", "n", "layers", "width", "heads", "steps", "batch", "seed"):
            p.add_argument(f"--{name}", type=NATURAL if name == "seed" else POSITIVE, default=getattr(default, name),
                           help=LEARNER_HELP[name])
        for name in ("lr", "curriculum", "sigma"):
            p.add_argument(f"--{name}", type=_real(0, strict=name == "lr"), default=getattr(default, name),
                           help=LEARNER_HELP[name])
        p.add_argument("--cache", default="runs/learners", help="trained learners, keyed by spec, shared by all commands")
        p.add_argument("--out", default=out, help="folder for the JSON, CSV and PNG")

    p = sub.add_parser("train", help="train one in-context learner (checkpoint, loss curve)")
    learner_options(p, "runs/train")
    p.add_argument("--log-every", dest="log_every", type=POSITIVE, default=100, help="steps between loss records")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("compare", help="a learner against every predictor and two constructions: SPD, ILWD (Fig. 1)")
    learner_options(p, "runs/compare")
    p.add_argument("--model", default=None, help="a learner file; default: the spec options' learner from the cache")
    p.add_argument("--prompts", type=POSITIVE, default=256, help="test prompts")
    p.add_argument("--queries", type=POSITIVE, default=32, help="fresh queries per prefix")
    p.add_argument("--x-scale", dest="x_scale", type=_real(0, strict=True), default=1.0, help="test inputs x ~ N(shift, scale^2 I)")
    p.add_argument("--x-shift", dest="x_shift", type=_real(), default=0.0, help="test inputs' mean shift")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("noise-sweep", help="best-fitting ridge lambda vs the training noise (Fig. 2)")
    learner_options(p, "runs/noise-sweep")
    p.add_argument("--ratios", nargs="+", type=_real(0), default=[0.0, 1 / 16, 1 / 4], help="(sigma/tau)^2 values")
    p.add_argument("--lams", nargs="+", type=_real(0), default=[0.0, 1 / 16, 1 / 9, 1 / 4, 4 / 9],
                   help="ridge lambdas to score against (0: OLS)")
    p.set_defaults(fn=cmd_noise_sweep)

    p = sub.add_parser("phase", help="depth and width sweep: closest to GD, ridge or OLS (Fig. 3)")
    learner_options(p, "runs/phase")
    p.add_argument("--depths", nargs="+", type=POSITIVE, default=[1, 2, 6], help="learner depths")
    p.add_argument("--widths", nargs="+", type=POSITIVE, default=[16, 32, 64], help="learner widths")
    p.set_defaults(fn=cmd_phase)

    p = sub.add_parser("probe", help="linear and MLP probes for X^T y and w_OLS, per layer (Fig. 4)")
    learner_options(p, "runs/probe")
    p.add_argument("--model", default=None, help="a learner file; default: the spec options' learner from the cache")
    p.add_argument("--prefixes", nargs="+", type=POSITIVE, default=None, help="numbers of examples (default d and n)")
    p.add_argument("--probe-steps", dest="probe_steps", type=POSITIVE, default=3000, help="training steps per probe")
    p.set_defaults(fn=cmd_probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `iclkit`: what it can do, not a long job
        parser.print_help()
        return 0
    try:
        return args.fn(args)
    except (ValueError, OSError, KeyError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    except Exception as e:  # noqa: BLE001 - e.g. safetensors' error for a file that is not a model
        if type(e).__module__.split(".")[0] not in ("safetensors", "numpy", "zipfile"):
            raise
        where = getattr(args, "file", None) or getattr(args, "out", None)
        console.print(f"[red]error:[/] {where + ': ' if where else ''}{type(e).__name__}: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
