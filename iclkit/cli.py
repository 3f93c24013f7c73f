"""The ``iclkit`` command: verify (the main job), sizes, build, run, prove."""

from __future__ import annotations

import argparse
import sys

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from iclkit.constructions import REGISTRY

console = Console(width=None if sys.stdout.isatty() else 160)
DEFAULT_CASES = [(2, 1), (8, 1), (8, 8)]


def _fmt(x: float) -> str:
    return f"{x:.2e}" if np.isfinite(x) else "inf"


def cmd_verify(args: argparse.Namespace) -> int:
    if args.symbolic:
        return cmd_prove(args)
    if args.property:
        from iclkit.verify.properties import run_properties

        return run_properties(args.examples, console)
    from iclkit.verify.numeric import check

    if args.d or args.n:  # a missing one takes the defaults' values
        cases = [(d, n) for d in (args.d or [8]) for n in (args.n or [1, 8])]
    else:
        cases = DEFAULT_CASES
    jobs = [(name, mode, d, n) for name in args.constructions for d, n in cases for mode in args.modes]
    table = Table(title=f"iclkit verify ({args.dtype}, seed {args.seed}, {args.trials} prompts each)")
    for col in ("construction", "mode", "d", "n", "layers", "width", "parameters", "max error", "certified bound",
                "rel. error", "target", "pass"):
        table.add_column(col, justify="right")
    failed = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("verifying", total=len(jobs))
        for name, mode, d, n in jobs:
            progress.update(task, description=f"{name} {mode} d={d} n={n}")
            row = check(name, d, n, dtype=args.dtype, mode=mode, seed=args.seed, trials=args.trials)
            ok = row.within_bound and row.meets_target
            failed += not ok
            table.add_row(name, mode, str(d), str(n), str(row.layers), str(row.width), f"{row.parameters:,}",
                          _fmt(row.max_error), _fmt(row.bound), _fmt(row.max_relative), _fmt(row.target),
                          "[green]pass[/]" if ok else "[red]FAIL[/]")
            progress.advance(task)
    console.print(table)
    console.print("pass = max error <= certified bound and relative error <= the accuracy target")
    return 1 if failed else 0


def cmd_sizes(args: argparse.Namespace) -> int:
    from iclkit.verify.numeric import DEFAULT_PARAMS

    table = Table(title="construction sizes (n = 1 is the paper's single block)")
    for col in ("construction", "mode", "d", "n", "layers", "heads", "residual width", "program rows", "mlp width",
                "parameters", "paper layers", "paper rows"):
        table.add_column(col, justify="right")
    for name in args.constructions:
        for d in args.d or [1, 2, 4, 8]:
            for n in args.n or [1]:
                for mode in args.modes:
                    c = REGISTRY[name](d, n, mode=mode, **DEFAULT_PARAMS[name])
                    s = c.sizes()
                    paper = c.paper
                    table.add_row(name, mode, str(d), str(n), str(s["layers"]), str(s["heads"]), str(s["residual width"]),
                                  str(s["program rows"]), str(s["mlp width"]), f"{s['parameters']:,}",
                                  str(paper.get("layers") or "-"), str(paper.get("rows") or "-"))
    console.print(table)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    kw = {k: getattr(args, k) for k in ("lr", "lam") if getattr(args, k) is not None}
    c = REGISTRY[args.construction](args.d, args.n, dtype=args.dtype, mode=args.mode[0], **kw)
    c.save(args.out)
    console.print(f"wrote {args.out}: {args.construction} d={args.d} n={args.n}, {c.num_layers} layers, "
                  f"width {c.width}, certified bound {_fmt(c.error_bound)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from iclkit.constructions.base import prompt_tokens
    from iclkit.transformer import Transformer
    from iclkit.verify.numeric import exact_predictions, sample_problems

    model, meta = Transformer.load(args.file)
    if "construction" not in meta:
        console.print(f"[red]{args.file} holds no construction metadata[/]")
        return 2
    from iclkit.primitives import Layout

    layout = Layout.from_dict(meta["layout"])
    if layout.width != model.cfg.width:
        console.print(f"[red]{args.file}: its layout has width {layout.width}, its model {model.cfg.width}[/]")
        return 2
    d, n = meta["d"], meta["n"]
    if args.prompts:
        data = np.load(args.prompts)
        X, y, xq = data["X"], data["y"], data["xq"]
        if X.ndim != 3 or X.shape[1:] != (n, d):
            console.print(f"[red]prompts X must have shape (batch, {n}, {d}) for this model, got {X.shape}[/]")
            return 2
    else:
        X, y, xq = sample_problems(d, n, args.batch, args.seed)
    with torch.no_grad():
        pred = model(torch.from_numpy(prompt_tokens(X, y, xq)))[:, -1].numpy()
    params = {k: np.asarray(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
    exact = exact_predictions(meta["construction"], params, X, y, xq)
    table = Table(title=f"{args.file}: {meta['construction']} d={d} n={n}")
    for col in ("prompt", "transformer", "closed form", "|difference|"):
        table.add_column(col, justify="right")
    for b in range(len(X)):
        table.add_row(str(b), f"{pred[b]:.12g}", f"{exact[b]:.12g}", _fmt(abs(pred[b] - exact[b])))
    console.print(table)
    console.print(f"certified bound: {_fmt(meta['error_bound'])}; residual slots: {', '.join(layout.slots)}")
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    from iclkit.verify.symbolic import run_proofs

    return run_proofs(console, max_d=getattr(args, "max_d", 3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iclkit", description=__doc__)
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--constructions", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
        p.add_argument("--d", nargs="+", type=int, default=None)
        p.add_argument("--n", nargs="+", type=int, default=None)
        p.add_argument("--modes", nargs="+", default=["fused", "faithful"], choices=["fused", "faithful"])
        p.add_argument("--dtype", default="float64", choices=["float64", "float32"])

    p = sub.add_parser("verify", help="build every construction and check it against its closed form")
    common(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trials", type=int, default=32)
    p.add_argument("--symbolic", action="store_true", help="run the sympy proofs instead (same as `iclkit prove`)")
    p.add_argument("--property", action="store_true", help="run the hypothesis property suites instead")
    p.add_argument("--examples", type=int, default=200, help="hypothesis examples per property")
    p.add_argument("--max-d", dest="max_d", type=int, default=3)
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("sizes", help="layers, heads, widths and parameters beside the paper's counts")
    common(p)
    p.set_defaults(fn=cmd_sizes)

    p = sub.add_parser("build", help="build one construction and save it (safetensors, with its layout)")
    p.add_argument("construction", choices=list(REGISTRY))
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--mode", nargs=1, default=["fused"], choices=["fused", "faithful"])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_build)

    p = sub.add_parser("run", help="run a saved model on prompts (an .npz with X, y, xq) or random ones")
    p.add_argument("file")
    p.add_argument("--prompts", default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("prove", help="symbolic proofs (sympy) of every primitive and both theorems")
    p.add_argument("--max-d", dest="max_d", type=int, default=3)
    p.set_defaults(fn=cmd_prove)

    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["verify"])
    try:
        return args.fn(args)
    except (ValueError, OSError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
