"""The primitives as operations on named slots, one module per family: the protocol and shared
helpers (:mod:`.base`), the attention family aff, mov, mean (:mod:`.linear`), products mul and
dot (:mod:`.product`), division (:mod:`.division`) and the piecewise-linear hinge: relu, abs,
clip, soft_threshold (:mod:`.hinge`). Each op class owns its whole behaviour:
reference semantics (numpy and sympy), bounds, own error, the certificate's evaluation model,
remainder and adjoint, its lowering to weights and the weights the proof expects."""

from iclkit.primitives.ops.base import (OPS, PIECES, Op, Parallel, Values, check_protocol, missing_pieces,
                                        shifted)
from iclkit.primitives.ops.division import Div, div
from iclkit.primitives.ops.hinge import Hinge, absolute, clip, relu, soft_threshold
from iclkit.primitives.ops.linear import Aff, Mean, Mov, aff, mov
from iclkit.primitives.ops.product import Mul, dot, mul

__all__ = ["OPS", "PIECES", "Aff", "Div", "Hinge", "Mean", "Mov", "Mul", "Op", "Parallel", "Values", "absolute", "aff",
           "check_protocol", "clip", "div", "dot", "missing_pieces", "mov", "mul", "relu", "shifted", "soft_threshold"]
