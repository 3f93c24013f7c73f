"""What every construction returns: a compiled program plus the in-context prompt format.

Prompt tokens (dimension d+1, laid out ``[y, x]``): BOS (zeros), then for each example
``[0, x_i]`` and ``[y_i, 0_d]``, then the query ``[0, x_q]`` — the same format a trained
in-context learner reads. Column 2i-1 holds x_i, column 2i holds y_i, column 2n+1 the query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from iclkit.algorithms import check_param, check_w0, sgd_expansion
from iclkit.primitives import BoundError, Compiled, compile_program
from iclkit.primitives.program import MAGNITUDE, Program  # parameters and domain bounds: [1/MAGNITUDE, MAGNITUDE]


ACCURACY = {"float64": 1e-8, "float32": 1e-3}  # the accuracy target t: |error| <= t (1 + |y_hat|), or refused


def default_x_norm(d: int) -> float:
    """A norm bound that x ~ N(0, I_d) exceeds with probability below e^{-18} (Gaussian concentration)."""
    return float(np.sqrt(d) + 6.0)


def default_y_bound(d: int) -> float:
    """|y| = |w.x| <= |w||x| with w, x ~ N(0, I_d) both within :func:`default_x_norm`."""
    return default_x_norm(d) ** 2


def prompt_inputs(X: np.ndarray, y: np.ndarray, xq: np.ndarray) -> dict[str, np.ndarray]:
    """Batched prompts (B,n,d), (B,n), (B,d) as per-column slots ``y`` (B,T) and ``x`` (B,T,d)."""
    B, n, d = X.shape
    T = 2 * n + 2
    dtype = object if X.dtype == object else float  # object: sympy symbols, for proofs
    xs = np.zeros((B, T, d), dtype=dtype)
    ys = np.zeros((B, T), dtype=dtype)
    xs[:, 1 : 2 * n : 2] = X
    ys[:, 2 : 2 * n + 1 : 2] = y
    xs[:, 2 * n + 1] = xq
    return {"y": ys, "x": xs}


def prompt_tokens(X: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """The token tensor (B, 2n+2, d+1): each token is ``[y, x]``."""
    cols = prompt_inputs(X, y, xq)
    return np.concatenate([cols["y"][..., None], cols["x"]], axis=-1)


@dataclass
class Construction:
    """A transformer built to run one learning algorithm in context, with its certificate."""

    name: str
    d: int
    n: int
    params: dict
    compiled: Compiled
    x_norm: float
    y_bound: float
    mode: str
    paper: dict = field(default_factory=dict)  # the paper's counts, where it states them
    contraction_bound: float | None = None  # a construction-specific certificate, where one exists
    domain: dict = field(default_factory=dict)  # further bounds the constants are sized for (e.g. w_bound)
    closed_form: Callable | None = None  # (X, y, xq) -> y_hat for one prompt: what the program must compute
    origin: str = "iclkit"  # "iclkit": a shipped construction, rebuilt by name; "program": from_program
    prompt_check: Callable | None = None  # (X, y, xq) batched -> None, or BoundError: a construction's own domain
    rounding_share: float = 1.0  # the share of the accuracy target the run-time certificate may use (ols: 0.9)

    # ---- what it is --------------------------------------------------------------------------
    @property
    def model(self):
        return self.compiled.model

    @property
    def layout(self):
        return self.compiled.layout

    @property
    def num_layers(self) -> int:
        return self.compiled.num_layers

    @property
    def width(self) -> int:
        return self.compiled.layout.width

    @property
    def program_rows(self) -> int:
        """Rows of the program's own slots (the paper's "visible rows"; system units excluded)."""
        sizes = self.compiled.program.sizes()
        return sum(sizes[s] for s in self.compiled.program.slots)

    @property
    def a_priori_bound(self) -> float:
        """Bound on |transformer y_hat - exact y_hat| over the whole input domain, from the
        compiled constants alone: the smaller of the generic forward analysis and the
        construction's own certificate (possibly infinite, or no smaller than |y_hat| itself)."""
        generic = self.compiled.error_bounds["yhat"]
        return generic if self.contraction_bound is None else min(generic, self.contraction_bound)

    @property
    def guarded(self) -> bool:
        """True where the a-priori bound cannot promise the accuracy target ``ACCURACY[dtype]
        (1 + |y_hat|)`` for every prompt: :meth:`predict` then certifies each prompt the
        a-priori bound does not cover, as it runs, and refuses one whose certificate exceeds
        its target."""
        return not self.a_priori_bound <= ACCURACY[self.model.cfg.dtype]

    @property
    def error_bound(self) -> float:
        """Certified bound on |transformer y_hat - exact y_hat| for every prediction
        :meth:`predict` returns: the smaller of :attr:`a_priori_bound` and the accuracy target
        at the domain's largest |y_hat|, ``ACCURACY[dtype] (1 + |y_hat| bound)``, which the
        run-time guard enforces. Always finite."""
        target = ACCURACY[self.model.cfg.dtype] * (1 + float(self.compiled.slot_bounds["yhat"]))
        return min(self.a_priori_bound, target)

    def certify(self, X, y, xq):
        """A rigorous bound on |transformer y_hat - exact y_hat| for these prompts (a float, or
        shape (batch,)): the a-posteriori analysis of :mod:`iclkit.primitives.certify` on this
        run: each op's own error measured in extended precision, carried to y_hat by the exact
        adjoint. Valid wherever it is finite, in or out of the domain (outside it,
        :meth:`predict` refuses; the certificate still holds), and for any weights."""
        X, y, xq, single = self._batch(X, y, xq)
        from iclkit.primitives.certify import certify

        bound = certify(self.compiled, self.inputs(X, y, xq), "yhat")
        return float(bound[0]) if single else bound

    def reference(self, X, y, xq) -> np.ndarray:
        """The program's exact y_hat, evaluated in extended precision (``numpy.longdouble``):
        what :meth:`certify` bounds the distance to. Compare with it, not with a float64
        closed form, whose own rounding can exceed a tight certificate's margin."""
        X, y, xq, single = self._batch(X, y, xq)
        inputs = {k: v.astype(np.longdouble) for k, v in self.inputs(X, y, xq).items()}
        yhat = self.compiled.program.interpret(inputs, t_max=self.compiled.t_max)["yhat"][:, -1]
        return yhat[0] if single else yhat

    def own_error_ratios(self, X, y, xq) -> dict[str, float]:
        """Each op's measured own error on these prompts over what the rounding model allows
        (:func:`iclkit.primitives.certify.own_error_ratios`): all <= 1 when the weights do
        what they were compiled to do; an op above 1 is where they do not."""
        X, y, xq, _ = self._batch(X, y, xq)
        from iclkit.primitives.certify import own_error_ratios

        return own_error_ratios(self.compiled, self.inputs(X, y, xq))

    def audit(self, X, y, xq) -> tuple[np.ndarray, dict[str, float]]:
        """(:meth:`certify`, :meth:`own_error_ratios`) from one run: the certificate per
        prompt (shape (batch,)) and each op's worst measured-over-modelled own error."""
        X, y, xq, _ = self._batch(X, y, xq)
        from iclkit.primitives.certify import audit

        return audit(self.compiled, self.inputs(X, y, xq), "yhat")

    def sizes(self) -> dict:
        cfg = self.model.cfg
        return {
            "construction": self.name, "mode": self.mode, "d": self.d, "n": self.n,
            "layers": self.num_layers, "stored layers": cfg.stored_layers, "loop": cfg.loop,
            "heads": cfg.num_heads, "residual width": self.width,
            "program rows": self.program_rows, "mlp width": cfg.mlp_width,
            "parameters": self.model.num_parameters(),  # stored: a looped block counts once
        }

    # ---- prompts --------------------------------------------------------------------------
    def _batch(self, X, y, xq) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        X, y, xq = (as_real_array(a, name) for a, name in ((X, "X"), (y, "y"), (xq, "xq")))
        single = X.ndim == 2
        if single:
            X, y, xq = X[None], y[None], xq[None]
        if X.ndim != 3 or not 1 <= X.shape[1] <= self.n or X.shape[2] != self.d:
            raise ValueError(f"X must have shape (n', {self.d}) or (batch, n', {self.d}) with 1 <= n' <= {self.n} for this "
                             f"{self.name} construction (n={self.n}, d={self.d}), got {np.shape(X[0] if single else X)}")
        if X.shape[0] == 0:
            raise ValueError("the batch is empty: X has shape (0, n, d)")
        if y.shape != X.shape[:2]:
            raise ValueError(f"y must have shape {X.shape[1:2] if single else X.shape[:2]}, got {y.shape[1:] if single else y.shape}")
        if xq.shape != (X.shape[0], self.d):
            raise ValueError(f"xq must have shape ({self.d},) or (batch, {self.d}), got {xq.shape[1:] if single else xq.shape}")
        for name, a in (("X", X), ("y", y), ("xq", xq)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} contains NaN or inf")
        return X, y, xq, single

    def check_domain(self, X, y, xq) -> None:
        """Raise :class:`BoundError` if a prompt leaves the certified domain (|x| <= x_norm, |y| <= y_bound)."""
        norms = np.linalg.norm(np.concatenate([X, xq[:, None]], axis=1), axis=-1)
        if norms.max() > self.x_norm:
            raise BoundError(f"an x has norm {norms.max():.4g} > x_norm {self.x_norm:.4g}: outside the certified domain")
        if np.abs(y).max(initial=0) > self.y_bound:
            raise BoundError(f"a y has |y| {np.abs(y).max():.4g} > y_bound {self.y_bound:.4g}: outside the certified domain")
        if "expansion_bound" in self.domain:  # stacked SGD whose worst-case update expands (constructions.sgd)
            grow = float(np.max(sgd_expansion(X, lr=self.params["lr"], lam=self.params["lam"])))
            if grow > self.domain["expansion_bound"]:
                raise BoundError(f"this prompt's SGD updates amplify an error in w by {grow:.4g} > expansion_bound "
                                 f"{self.domain['expansion_bound']:.4g}: outside the certified domain (exact SGD is "
                                 "unstable on it; a smaller lr, or a larger expansion_bound and a looser certificate)")
        if self.prompt_check is not None:
            self.prompt_check(X, y, xq)

    def inputs(self, X, y, xq) -> dict[str, np.ndarray]:
        """Per-column input slots for batched prompts (the interpreter's and the model's input)."""
        return prompt_inputs(X, y, xq)

    def encode(self, X, y, xq) -> torch.Tensor:
        """The token tensor ``(batch, 2n+2, d+1)`` for prompts (X, y, xq)."""
        X, y, xq, _ = self._batch(X, y, xq)
        return self.compiled.tokens(self.inputs(X, y, xq))

    def predict(self, X, y, xq, strict: bool = True, on_refusal: str = "raise"):
        """The transformer's prediction at the query column: a float, or shape (batch,).

        Strict (default): the weights must be the compiled ones and every prompt inside the
        certified domain (else ``ValueError`` or :class:`BoundError` naming why); where the
        a-priori bound cannot promise the accuracy target (:attr:`guarded`), each prediction
        comes from the run that certifies it, and one whose certificate exceeds its target is
        refused. ``on_refusal="nan"``: a refused prompt gets NaN and the others their
        predictions (:meth:`predict_each` also gives the reasons). ``strict=False`` warns
        instead and runs the forward pass alone."""
        if on_refusal not in ("raise", "nan"):
            raise ValueError(f"on_refusal must be 'raise' or 'nan', got {on_refusal!r}")
        if on_refusal == "nan":
            values, _ = self.predict_each(X, y, xq)
            return float(values[0]) if np.ndim(X) == 2 else values
        X, y, xq, single = self._batch(X, y, xq)
        self.compiled.check_model(strict)
        if strict:
            self.check_domain(X, y, xq)
        inputs = self.inputs(X, y, xq)
        if strict and self.guarded:
            out = self._certified(inputs)
        else:
            self.compiled.check_intermediates(inputs, strict)
            with torch.no_grad():
                out = self.model(self.compiled.tokens(inputs))[:, -1].cpu().numpy()
        return float(out[0]) if single else out

    def predict_each(self, X, y, xq) -> tuple[np.ndarray, list[str | None]]:
        """Strict predictions for a batch, prompt by prompt where some are refused: (values of
        shape (batch,), NaN where refused; per prompt None or the reason it was refused). The
        batch runs at once; only if it is refused are its prompts run one at a time."""
        X, y, xq, _ = self._batch(X, y, xq)
        try:
            return np.asarray(self.predict(X, y, xq), dtype=float), [None] * len(X)
        except BoundError:
            pass
        values, reasons = np.full(len(X), np.nan), []
        for b in range(len(X)):
            try:
                values[b] = self.predict(X[b], y[b], xq[b])
                reasons.append(None)
            except BoundError as e:
                reasons.append(str(e).replace("prompt 0: ", "", 1))
        return values, reasons

    def _certified(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The run-time guard (:attr:`guarded`), from one run per chunk of prompts: the program's
        reference run vets the domain, the forward pass gives the predictions, and the
        certificate of that same pass must be within ``t' (1 + |y_hat computed|)``,
        t' = t / (1 + t), which gives |error| <= t (1 + |y_hat|) for the exact y_hat."""
        from iclkit.primitives.certify import certified_run

        out, cert = certified_run(self.compiled, inputs, "yhat",
                                  check=lambda steps: self.compiled.check_intermediates(inputs, True, steps))
        t = ACCURACY[self.model.cfg.dtype]
        allowed = self.rounding_share * t / (1 + t) * (1 + np.abs(out))
        bad = np.flatnonzero(~(cert <= allowed))
        if bad.size:
            i = bad[0]
            raise BoundError(f"prompt {i}: its certificate {cert[i]:.4g} exceeds the accuracy target {allowed[i]:.4g} "
                             f"= {t:g} (1 + |y_hat|) (this {self.name} construction's a-priori bound, "
                             f"{self.a_priori_bound:.4g}, cannot promise the target, so predictions are certified as "
                             "they run)")
        return out

    @staticmethod
    def load(path) -> "Construction":
        """The construction a file written by :meth:`save` holds, rebuilt from its header (its
        program, so a user's construction needs no user code) and checked against the file:
        every configuration field and every tensor (``ValueError`` naming the first that differs)."""
        from iclkit.constructions.saved import load_construction

        return load_construction(path)

    def save(self, path) -> None:
        """Write the model and what it is (construction, sizes, parameters, layout, domain)."""
        self.compiled.check_model()
        self.model.save(path, self.metadata())

    def metadata(self) -> dict:
        """What the construction is, for a saved file's header or an export's labels: its name,
        sizes, parameters, domain, dtype, mode, layout and the program itself (so a fresh
        process rebuilds and proves it without the code that wrote it)."""
        return {"construction": self.name, "origin": self.origin, "d": self.d, "n": self.n, "mode": self.mode,
                "params": {k: np.asarray(v).tolist() for k, v in self.params.items()},
                "layout": self.layout.to_dict(), "x_norm": self.x_norm, "y_bound": self.y_bound,
                "domain": self.domain, "dtype": self.model.cfg.dtype, "levels": self.compiled.context.levels,
                "error_bound": self.error_bound, "program": self.compiled.program.to_dict()}

    def trace(self, X, y, xq) -> list[dict[str, np.ndarray]]:
        """Named slots of the residual stream before the first layer and after every layer (one prompt)."""
        X, y, xq, _ = self._batch(X, y, xq)
        _, states = self.compiled.run(self.inputs(X[:1], y[:1], xq[:1]), states=True)
        return [{k: v[0] for k, v in s.items()} for s in states]


DEFAULT_LEVELS = {"float64": 4, "float32": 2}  # Richardson scales per GeLU product


def build(name: str, program: Program, *, d: int, n: int, params: dict, x_norm: float, y_bound: float,
          dtype: str, mode: str, levels: int | None, paper: dict | None = None, domain: dict | None = None) -> Construction:
    """Compile a shipped construction's program for prompts of n examples (2n+2 columns); its
    closed form is the algorithm of the same name in :mod:`iclkit.algorithms`."""
    compiled = _compile(program, n, dtype, mode, levels)
    return Construction(name, d, n, params, compiled, x_norm, y_bound, mode, paper or {}, domain=domain or {},
                        closed_form=algorithm_closed_form(name, params))


def _compile(program: Program, n: int, dtype: str, mode: str, levels: int | None) -> Compiled:
    if dtype not in DEFAULT_LEVELS:
        raise ValueError(f"dtype must be one of {sorted(DEFAULT_LEVELS)}, got {dtype!r}")
    if mode not in ("fused", "faithful"):
        raise ValueError(f"mode must be 'fused' or 'faithful', got {mode!r}")
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1):
        raise ValueError(f"levels (Richardson scales per GeLU product) must be a positive integer, got {levels!r}")
    levels = DEFAULT_LEVELS[dtype] if levels is None else int(levels)
    return compile_program(program, max_len=2 * n + 2, dtype=dtype, mode=mode, levels=levels, output="yhat")


def algorithm_closed_form(name: str, params: dict) -> Callable:
    """``(X, y, xq) -> x_q . w`` with ``w = iclkit.algorithms.<name>(X, y, **params)``."""
    import iclkit.algorithms as algorithms

    fn = getattr(algorithms, name)
    return lambda X, y, xq: xq @ fn(X, y, **params)


def from_program(program: Program, *, name: str, d: int, n: int, params: dict | None = None,
                 closed_form: Callable | None = None, x_norm: float | None = None, y_bound: float | None = None,
                 dtype: str = "float64", mode: str = "fused", levels: int | None = None) -> Construction:
    """A construction from a program you wrote: compiled, guarded, certified, savable and
    provable like the shipped ones (docs/authoring.md).

    The contract: the program reads the prompt through the input slots ``x`` (shape (d,)) and
    ``y`` (scalar), each column holding one token of iclkit's prompt format (BOS, then
    ``[0, x_i]``, ``[y_i, 0]`` for each example, then ``[0, x_q]``: 2n + 2 columns, the
    ``pos`` unit holding t / (2n + 1)), and writes its prediction to the scalar slot ``yhat``,
    read at the query column. Its input bounds are the certified domain: ``x_norm`` and
    ``y_bound`` default to them and may not exceed them. ``closed_form(X, y, xq)``, if given,
    is what the program should compute for one prompt (numpy; with sympy-friendly operations
    it is also what :func:`iclkit.verify.symbolic.prove_closed_form` proves)."""
    if not isinstance(program, Program):
        raise ValueError(f"from_program needs an iclkit.primitives.Program, got {type(program).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    from iclkit.constructions import REGISTRY

    if name in REGISTRY:
        raise ValueError(f"name {name!r} is a construction iclkit ships; give yours another name, so a saved file "
                         "or export cannot pass for the shipped one")
    check_sizes(d, n)
    want = {"x": (d,), "y": ()}
    for slot, shape in want.items():
        if program.slots.get(slot) != shape or slot not in program.inputs:
            raise ValueError(f"{name}: a construction's program reads the prompt through the input slot {slot!r} of "
                             f"shape {shape} (docs/authoring.md); this one has "
                             f"{'no input ' + repr(slot) if slot not in program.inputs else program.slots.get(slot)}")
    extra = sorted(set(program.inputs) - set(want))
    if extra:
        raise ValueError(f"{name}: a construction's program has only the inputs 'x' and 'y'; this one also reads {extra}")
    if program.slots.get("yhat") not in ((), (1,)):
        raise ValueError(f"{name}: a construction's program writes its prediction to a scalar slot 'yhat'")
    if closed_form is not None and not callable(closed_form):
        raise ValueError(f"{name}: closed_form must be a function (X, y, xq) -> y_hat, got {type(closed_form).__name__}")
    x_norm = program.inputs["x"] if x_norm is None else check_magnitude("x_norm", check_param("x_norm", x_norm))
    y_bound = program.inputs["y"] if y_bound is None else check_magnitude("y_bound", check_param("y_bound", y_bound))
    for what, value, bound, slot in (("x_norm", x_norm, program.inputs["x"], "x"), ("y_bound", y_bound, program.inputs["y"], "y")):
        if value > bound:
            raise ValueError(f"{name}: {what} {value:g} exceeds the program's bound {bound:g} on input {slot!r}: "
                             "the certificate covers only inputs within it")
    compiled = _compile(program, n, dtype, mode, levels)
    return Construction(name, d, n, dict(params or {}), compiled, float(x_norm), float(y_bound), mode,
                        closed_form=closed_form, origin="program")


def is_symbolic(*values) -> bool:
    """True when any parameter is a sympy expression (programs then carry no numeric bounds)."""
    return any(np.asarray(v).dtype == object for v in values)


class NoBounds(dict):
    """Bounds of a symbolic program: every lookup is None (nothing to certify numerically)."""

    def __missing__(self, key):
        return None




def check_magnitude(name: str, value: float) -> float:
    """``value`` (already a checked real number), refused by name if it is nonzero and outside
    the magnitudes the constructions' bounds are computed for: beyond them a bound overflows
    float64 or a reciprocal does."""
    if value and not 1 / MAGNITUDE <= abs(value) <= MAGNITUDE:
        raise ValueError(f"{name} = {value:g} is outside the magnitudes iclkit sizes its constants for "
                         f"({1 / MAGNITUDE:g} to {MAGNITUDE:g}): its bounds would overflow float64")
    return value


def step_params(name: str, d: int, n: int, lr: float, lam: float, w0, x_norm, y_bound):
    """Validate a gradient method's parameters; fill in w0 = 0 and the default domain."""
    check_sizes(d, n)
    check_magnitude("lr", check_param("lr", lr))
    check_magnitude("lam", check_param("lam", lam, zero_ok=True))
    w0 = check_w0(w0, d)
    check_magnitude("|w0|", float(np.linalg.norm(w0)) if np.all(np.abs(w0) <= MAGNITUDE) else float("inf"))
    return w0, *domain_params(d, x_norm, y_bound)


def domain_params(d: int, x_norm, y_bound) -> tuple[float, float]:
    """The certified domain's |x| and |y| bounds, checked, defaults filled in."""
    x_norm = default_x_norm(d) if x_norm is None else check_magnitude("x_norm", check_param("x_norm", x_norm))
    return x_norm, default_y_bound(d) if y_bound is None else check_magnitude("y_bound", check_param("y_bound", y_bound))


def as_real_array(a, name: str) -> np.ndarray:
    """``a`` as a float array; complex, boolean and non-numeric input is refused by name."""
    if isinstance(a, torch.Tensor):  # predict runs without autograd: a tensor that requires grad is read as values
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == bool or np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == object):
        raise ValueError(f"{name} must hold real numbers, got an array of {arr.dtype}")
    try:
        return arr.astype(float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must hold real numbers: {e}") from None


def check_sizes(d: int, n: int) -> None:
    for name, v in (("d", d), ("n", n)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
