"""Figures for the experiment commands (matplotlib, written to PNG without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def loss_curve(result: dict, path: Path) -> None:
    """The running training loss / d, and the OLS optimum for noiseless prompts."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    losses = result["losses"]
    ax.plot(np.arange(1, len(losses) + 1) * result["log_every"], losses, label="learner")
    if result["ols_loss"] is not None:
        ax.axhline(result["ols_loss"], color="k", ls=":", label="OLS (optimal, noiseless)")
    ax.set(xlabel="step", ylabel="training loss / d", yscale="log", title="training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(result: dict, path: Path) -> None:
    """Fig. 1: SPD/d and ILWD/d of the learner to each predictor, per number of examples."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("spd", "ilwd")):
        for name, c in result["against"].items():
            n = np.arange(len(c[metric]))
            built = {"Constructed ridge(0.1)": "k", "Constructed GD(0.01)": "0.5"}
            ax.plot(n[1:], c[metric][1:], "--" if name in built else "-", color=built.get(name), label=name)
            ax.fill_between(n[1:], c[f"{metric}_lo"][1:], c[f"{metric}_hi"][1:], alpha=0.15)
        ax.axvline(result["spec"]["d"], color="k", lw=0.5)
        ax.set(xlabel="number of in-context examples", ylabel=f"{metric.upper()} / d", yscale="log",
               title=f"learner vs predictors: {metric.upper()}")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def noise_sweep(result: dict, path: Path) -> None:
    """Fig. 2: MSPD/d of each noise level's learner to Ridge(lambda), a heat map."""
    table = np.array(result["mspd_over_d"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    im = ax.imshow(np.log10(table), cmap="viridis_r")
    ax.set_xticks(range(len(result["lams"])), [f"{v:.3g}" for v in result["lams"]])
    ax.set_yticks(range(len(result["ratios"])), [f"{v:.3g}" for v in result["ratios"]])
    for i, row in enumerate(table):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.1e}", ha="center", va="center", fontsize=7, color="w" if j == np.argmin(row) else "k")
    ax.set(xlabel="ridge lambda (0 = OLS)", ylabel="(sigma / tau)^2 in training", title="MSPD / d, learner vs ridge")
    fig.colorbar(im, label="log10")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def phase(result: dict, path: Path) -> None:
    """Fig. 3: SPD/d to the best GD, best ridge and OLS, by depth and by width."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, axis, key in zip(axes, ("depth", "width"), ("layers", "width")):
        runs = [r for r in result["runs"] if r["axis"] == axis]
        xs = [r[key] for r in runs]
        for family in ("GD", "Ridge", "OLS"):
            ax.plot(xs, [r["fits"][family]["spd"] for r in runs], "o-", label=family)
        ax.set(xlabel=key, ylabel="SPD / d (mean over prefixes)", yscale="log", xscale="log", title=f"by {axis}")
        ax.set_xticks(xs, [str(x) for x in xs], minor=False)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def probe(result: dict, path: Path) -> None:
    """Fig. 4: unexplained variance per layer, linear vs MLP probe, for each target and prefix."""
    targets = sorted({r["target"] for r in result["results"]})
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for prefix in result["prefixes"]:
            for kind, style in (("linear", "--"), ("mlp", "-")):
                rows = [r for r in result["results"] if r["target"] == target and r["prefix"] == prefix and r["kind"] == kind]
                ax.plot([r["layer"] for r in rows], [r["unexplained"] for r in rows], style, marker="o",
                        label=f"{kind}, {prefix} examples")
        ax.set(xlabel="layer (0 = embedding)", ylabel="unexplained variance", yscale="log", title=f"probing {target}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layerwise(result: dict, path: Path) -> None:
    """Per layer, the read-out's SPD/d to GD after k steps and to Newton after k iterations."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, key, title in ((axes[0], "to_gd", "GD steps k"), (axes[1], "to_newton", "Newton iterations k")):
        for row in result["layers"]:
            ks = sorted(int(k) for k in row[key])
            ax.plot(ks, [row[key][k] for k in ks], marker=".", label=f"layer {row['layer']}")
        ax.set(xlabel=title, yscale="log", xscale="symlog" if key == "to_gd" else "linear")
    axes[0].set_ylabel("SPD/d of the layer's read-out")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
