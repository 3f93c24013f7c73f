"""Named residual layout, the RAW primitives (mov, aff, mul, dot, div, mean, and the hinge: relu, abs, clip,
soft_threshold), programs and compilation."""

from iclkit.primitives.compile import BoundError, Compiled, compile_program
from iclkit.primitives.layout import Layout, Slot
from iclkit.primitives.ops import (Aff, Div, Hinge, Mean, Mov, Mul, Op, Parallel, absolute, aff, clip, div, dot, mov, mul,
                                   relu, soft_threshold)
from iclkit.primitives.program import Layer, Problem, Program, ProgramError

__all__ = [
    "Aff", "BoundError", "Compiled", "Div", "Hinge", "Layer", "Layout", "Mean", "Mov", "Mul", "Op", "Parallel",
    "Problem", "Program", "ProgramError", "Slot", "absolute", "aff", "clip", "compile_program", "div", "dot", "mov",
    "mul", "relu", "soft_threshold",
]
