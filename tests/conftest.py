import os

import torch
from hypothesis import settings

# The suite runs on two workers (pytest -n 2) on two cores: one torch thread each, for the
# workers and for the processes they start, so the two never compete for a core.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
