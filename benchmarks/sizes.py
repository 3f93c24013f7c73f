"""Looped storage: what a construction built for n = 40 stores against one built for n = 1.
For sgd, gd and ridge (both modes, the paper's parameters, float64): layers applied and
stored, the loop (first layer, period, repeats), stored parameters, the saved file's size,
and the n = 40 / n = 1 ratios (issue 10's target: at most 3x). Also checks that the looped
n = 40 model predicts bit for bit what its unrolled stack predicts. Prints a markdown table;
``--out FILE`` also writes it (the README includes docs/tables/)."""

import argparse
import tempfile
from pathlib import Path

import torch

from iclkit import constructions as C
from iclkit.verify.numeric import DEFAULT_PARAMS, sample_problems
from tables import emit  # benchmarks/tables.py, beside this script

parser = argparse.ArgumentParser()
parser.add_argument("--d", type=int, default=8)
parser.add_argument("--n", type=int, default=40)
parser.add_argument("--out", default=None)
args = parser.parse_args()
PAPER = {name: DEFAULT_PARAMS[name] for name in ("sgd", "gd", "ridge")}


def measure(name: str, mode: str, n: int, folder: Path) -> dict:
    c = C.REGISTRY[name](args.d, n, mode=mode, **DEFAULT_PARAMS[name])
    path = folder / f"{name}-{mode}-{n}.safetensors"
    c.save(path)
    return {"c": c, "params": c.model.num_parameters(), "bytes": path.stat().st_size}


def unrolled_agrees(c) -> bool:
    """The looped model and its plain unrolled stack give bit-identical predictions."""
    X, y, xq = sample_problems(args.d, c.n, 4, seed=0)
    tokens = c.compiled.tokens(c.inputs(X, y, xq))
    with torch.no_grad():
        return bool(torch.equal(c.model(tokens), c.model.unroll()(tokens)))


lines = [f"Made by `python benchmarks/sizes.py` (d = {args.d}, float64, the paper's parameters {PAPER}). "
         "Stored parameters count each tensor once (the looped block once); file: the saved .safetensors. "
         "Loop: (first layer, period, repeats). Unrolled = looped: the n-model's predictions equal its plain "
         "unrolled stack's bit for bit.", "",
         f"| construction | mode | layers n = 1 | layers n = {args.n} (stored) | loop | parameters n = 1 | "
         f"parameters n = {args.n} | ratio | file n = 1 | file n = {args.n} | ratio | unrolled = looped |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
print("\n".join(lines), flush=True)
with tempfile.TemporaryDirectory() as tmp:
    for name in ("sgd", "gd", "ridge"):
        for mode in ("fused", "faithful"):
            one, big = measure(name, mode, 1, Path(tmp)), measure(name, mode, args.n, Path(tmp))
            cfg1, cfg = one["c"].model.cfg, big["c"].model.cfg
            line = (f"| {name} | {mode} | {cfg1.num_layers} | {cfg.num_layers} ({cfg.stored_layers}) | "
                    f"{cfg.loop if cfg.loop else '-'} | {one['params']:,} | {big['params']:,} | "
                    f"{big['params'] / one['params']:.2f}x | {one['bytes'] / 2**20:.2f} MB | "
                    f"{big['bytes'] / 2**20:.2f} MB | {big['bytes'] / one['bytes']:.2f}x | "
                    f"{'yes' if unrolled_agrees(big['c']) else 'NO'} |")
            print(line, flush=True)
            lines.append(line)
            for path in Path(tmp).iterdir():
                path.unlink()
emit(lines, args.out)
assert not any(line.endswith("| NO |") for line in lines), "a looped model differs from its unrolled stack"
