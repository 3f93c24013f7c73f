"""Saved constructions: the header a file carries (the program itself, its parameters, domain,
dtype, mode), rebuilt without the code that wrote it and checked against the file, field by
field and tensor by tensor (:func:`load_construction`, :meth:`Construction.load`)."""

from __future__ import annotations

import numpy as np

from iclkit.constructions import REGISTRY


HEADER_FIELDS = ("construction", "d", "n", "mode", "params", "x_norm", "y_bound", "dtype", "program")


def rebuild(meta: dict):
    """The construction a saved file's header (or an export's labels) describes, built afresh:
    a shipped one by its name and parameters, checked against the program the header carries;
    one made by :func:`~iclkit.constructions.from_program` from that program (no user code
    needed). ``ValueError`` naming what is missing, unknown or inconsistent."""
    from iclkit.constructions import from_program
    from iclkit.primitives import Program

    missing = [k for k in HEADER_FIELDS if k not in meta and not (k == "program" and meta.get("origin") is None)]
    if "construction" not in meta:
        raise ValueError("the file holds no iclkit construction metadata (no 'construction' in its header)")
    if missing:
        raise ValueError(f"the header of construction {meta['construction']!r} lacks {', '.join(missing)}")
    params = {k: np.asarray(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
    origin = meta.get("origin", "iclkit")
    common = dict(x_norm=meta["x_norm"], y_bound=meta["y_bound"], dtype=meta["dtype"], mode=meta["mode"],
                  levels=meta.get("levels"))
    try:
        if origin == "program":
            program = Program.from_dict(meta["program"])
            return from_program(program, name=meta["construction"], d=meta["d"], n=meta["n"], params=params, **common)
        if origin != "iclkit":
            raise ValueError(f"unknown origin {origin!r} (iclkit or program)")
        if meta["construction"] not in REGISTRY:
            raise ValueError(f"construction {meta['construction']!r} is not one iclkit ships ({', '.join(REGISTRY)}) "
                             "and the header carries no program to rebuild it from")
        c = REGISTRY[meta["construction"]](meta["d"], meta["n"], **common, **params, **meta.get("domain", {}))
    except TypeError as e:  # a parameter the construction does not take
        raise ValueError(f"the header's parameters do not fit construction {meta['construction']!r}: {e}") from None
    if "program" in meta and meta["program"] != c.compiled.program.to_dict():
        raise ValueError(f"the program it carries is not the {c.name} construction's for its parameters "
                         f"(d={c.d}, n={c.n}, {c.mode}): edited, or written by another version")
    return c


def config_difference(cfg, c) -> str | None:
    """The first field of a model configuration that differs from what construction ``c``'s
    program compiles to (any field changes what the model computes or how it is stored), or None."""
    from dataclasses import asdict

    want = asdict(c.model.cfg)
    for name, value in asdict(cfg).items():
        if value != want[name]:
            return (f"its model configuration sets {name} = {value!r} where the {c.name} construction (d={c.d}, "
                    f"n={c.n}, {c.mode}, {c.model.cfg.dtype}) compiles to {want[name]!r}: it changes what the model "
                    "computes")
    return None


def first_difference(model, c) -> str | None:
    """The first way a model differs from construction ``c``'s (a configuration field, or a
    tensor), or None."""
    import torch

    problem = config_difference(model.cfg, c)
    if problem:
        return problem
    rebuilt = c.model.state_dict()
    if set(model.state_dict()) != set(rebuilt):
        return f"its tensors are not the {c.name} construction's"
    for name, tensor in model.state_dict().items():
        if rebuilt[name].shape != tensor.shape or not torch.equal(rebuilt[name], tensor):
            return f"tensor {name} differs from the {c.name} construction its header names"
    return None


def open_construction(path):
    """(the model a saved file holds, the construction its header describes, rebuilt): the
    header's model configuration is checked field by field against the rebuilt one before the
    tensors are read, so an edited field is refused by name (``ValueError``), never run."""
    from iclkit.transformer import Transformer

    cfg, meta = Transformer.read_header(path)
    try:
        c = rebuild(meta)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    problem = config_difference(cfg, c)
    if problem:
        raise ValueError(f"{path}: {problem}")
    model, _ = Transformer.load(path)
    return model, c


def load_construction(path):
    """A saved construction, rebuilt from its header and checked against the file: the
    configuration field by field, every tensor bit for bit (the guard and the certificates
    are for the compiled weights), else ``ValueError`` naming the first field or tensor that
    differs."""
    model, c = open_construction(path)
    problem = first_difference(model, c)
    if problem:
        raise ValueError(f"{path}: {problem} (edited or corrupted weights carry no certificate)")
    return c
