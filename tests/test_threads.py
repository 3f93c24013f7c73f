"""iclkit's thread policy (iclkit/threads.py): one torch thread unless the user says otherwise."""

import os
import subprocess
import sys

import pytest

from iclkit.threads import requested_threads


def test_the_policy_and_its_overrides():
    assert requested_threads({}) == 1
    assert requested_threads({"ICLKIT_NUM_THREADS": "3"}) == 3
    assert requested_threads({"ICLKIT_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}) == 3  # iclkit's own wins
    assert requested_threads({"OMP_NUM_THREADS": "2"}) is None  # torch's own setting left alone
    assert requested_threads({"MKL_NUM_THREADS": "2"}) is None
    for bad in ("abc", "0", "-1", ""):
        with pytest.warns(UserWarning, match="is not a whole number of threads >= 1; iclkit uses 1"):
            assert requested_threads({"ICLKIT_NUM_THREADS": bad}) == 1


@pytest.mark.parametrize("env, threads", [({}, 1), ({"ICLKIT_NUM_THREADS": "2"}, 2)])
def test_import_iclkit_sets_torch(env, threads):
    """In a fresh process (the suite's own OMP_NUM_THREADS removed), as the policy says."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} | env
    out = subprocess.run([sys.executable, "-c", "import iclkit, torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, env=clean, check=True)
    assert out.stdout.strip() == str(threads)
