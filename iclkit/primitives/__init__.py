"""Named residual layout, the RAW primitives (mov, aff, mul, dot, div, mean), programs and compilation."""

from iclkit.primitives.compile import BoundError, Compiled, compile_program
from iclkit.primitives.layout import Layout, Slot
from iclkit.primitives.ops import Aff, Div, Mean, Mov, Mul, Op, Parallel, aff, div, dot, mov, mul
from iclkit.primitives.program import Layer, Problem, Program, ProgramError

__all__ = [
    "Aff", "BoundError", "Compiled", "Div", "Layer", "Layout", "Mean", "Mov", "Mul", "Op", "Parallel",
    "Problem", "Program", "ProgramError", "Slot", "aff", "compile_program", "div", "dot", "mov", "mul",
]
