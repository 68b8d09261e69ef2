"""Reproducible float work: the same seed gives bit-identical trained and retrained
weights whatever the thread count, and `make demo` writes under build/ only."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Float training, then one epoch of SmartDeal (STE) retraining; prints a digest of both.
SCRIPT = """
import hashlib
import numpy as np
from sim.compress import CompressOptions, prune_masks
from sim.flow import retrain
from sim.golden.datasets import dataset
from sim.golden.train import train_float

data_set = dataset("digits")
network = data_set.model("mlp")
data = data_set.load(seed=0)
params = train_float(network, data, epochs=1, seed=3, batch_size=256)
options = CompressOptions()
masks = prune_masks(network, params, options)
best, _ = retrain(network, params, data, masks, options, method="ste", epochs=1, seed=4)
digest = hashlib.sha256()
for source in (params, best):
    for key in sorted(source):
        digest.update(np.ascontiguousarray(source[key], dtype=np.float64).tobytes())
print(digest.hexdigest())
"""


def _digest(threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_training_and_retraining_do_not_depend_on_the_thread_count():
    one, two = _digest(1), _digest(2)
    assert re.fullmatch(r"[0-9a-f]{64}", one)
    assert one == two


def _recipe(makefile, target):
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, f"no target {target!r}"
    return match.group(1)


def test_make_demo_writes_under_build_and_a_separate_target_refreshes_the_docs():
    makefile = (ROOT / "Makefile").read_text()
    demo = _recipe(makefile, "demo")
    assert "--report build/" in demo and "docs/" not in demo
    assert "PORTABLE_NUMERICS" in demo
    assert "--report docs/digits-results.md" in _recipe(makefile, "demo-docs")
