"""A picture of a compiled model: which heads and MLPs each layer uses, what they compute, and
the circuit through which the prompt reaches the prediction (``iclkit draw``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from iclkit.constructions import Construction
from iclkit.bench.cases import derived_circuit
from iclkit.primitives.circuit import Circuit

IN_CIRCUIT, USED = "#f4a259", "#d9d9d9"


def draw(c: Construction, out: str | Path, circuit: Circuit | None = None, max_layers: int = 40) -> Path:
    """Write a PNG of ``c``: one column per applied layer (the first ``max_layers``), one row
    per head and one for the MLP; a box for each part the layer uses, labelled with its ops
    (a head also with its read pattern), orange where it is in the circuit, and the circuit's
    edges between them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    circuit = circuit or derived_circuit(c)
    layers = min(c.num_layers, max_layers)
    rows = c.model.cfg.num_heads + 1  # heads, then the MLP
    place = {"embed": (-1.0, rows / 2 - 0.5), "out": (layers, rows / 2 - 0.5)}
    fig, ax = plt.subplots(figsize=(2.1 * (layers + 2), 1.3 * rows + 1.2))
    for n in circuit.nodes:
        if n.kind in ("head", "mlp") and n.layer < layers:
            row = n.head if n.kind == "head" else rows - 1
            place[n.name] = (n.layer, row)
            label = "\n".join(textwrap.fill(op, 26) for op in n.ops) or ("clears, resets" if n.kind == "head" else "")
            if n.kind == "head":
                label = f"{n.pattern}\n{label}"
            colour = IN_CIRCUIT if n.name in circuit.truth_nodes else USED
            ax.add_patch(plt.Rectangle((n.layer - 0.45, row - 0.4), 0.9, 0.8, color=colour, zorder=2))
            ax.text(n.layer, row, label, ha="center", va="center", fontsize=6, zorder=3, wrap=True)
    for name in ("embed", "out"):
        x, y = place[name]
        ax.add_patch(plt.Rectangle((x - 0.45, y - 0.4), 0.9, 0.8, color=IN_CIRCUIT, zorder=2))
        ax.text(x, y, "embedding" if name == "embed" else "readout (y_hat)", ha="center", va="center", fontsize=7, zorder=3)
    for u, v in circuit.truth:
        if u in place and v in place:
            (x0, y0), (x1, y1) = place[u], place[v]
            ax.annotate("", (x1 - 0.45, y1), (x0 + 0.45, y0), zorder=1,
                        arrowprops={"arrowstyle": "->", "color": "#7a7a7a", "lw": 0.6, "alpha": 0.6})
    ax.set_xlim(-1.6, layers + 0.6)
    ax.set_ylim(rows - 0.4, -0.6)
    ax.set_xticks(range(layers), [f"layer {i}" for i in range(layers)], fontsize=7)
    ax.set_yticks(range(rows), [f"head {h}" for h in range(rows - 1)] + ["MLP"], fontsize=7)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    shown = f"first {layers} of {c.num_layers} layers" if layers < c.num_layers else f"{c.num_layers} layers"
    ax.set_title(f"{c.name} (d = {c.d}, n = {c.n}, {c.mode}): {shown}; orange: the nodes of the circuit from "
                 f"the prompt to y_hat; arrows: its edges between the layers drawn ({len(circuit.truth)} in all)",
                 fontsize=9)
    out = Path(out)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out
