"""A benchmark for interpretability methods: constructions whose circuits are known.

Cases (:mod:`.cases`), resample path patching (:mod:`.patching`), the scorer (:mod:`.score`),
the baselines (:mod:`.methods`) and the whole benchmark with its truth checks (:mod:`.suite`).
docs/benchmark.md describes the format and how to add a method."""

from iclkit.bench.cases import Case, CaseSpec, default_specs, load_case, make_case, variables, write_case
from iclkit.bench.score import score, score_variables
from iclkit.bench.suite import check_truth

__all__ = ["Case", "CaseSpec", "check_truth", "default_specs", "load_case", "make_case", "score", "score_variables",
           "variables", "write_case"]
