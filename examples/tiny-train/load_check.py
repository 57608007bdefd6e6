#!/usr/bin/env python3
"""load_check.py CKPT: exit 0 when CKPT is a tiny-train checkpoint that loads (a dict
with a step and finite weights); the checkpoint load command for `gpurent verify` and
the pull phase (`load_cmd`)."""
import math
import pickle
import sys

with open(sys.argv[1], "rb") as f:
    state = pickle.load(f)
assert isinstance(state, dict) and state.get("step", 0) >= 1, "no step in the checkpoint"
assert math.isfinite(state["w"]) and math.isfinite(state["b"]), "weights are not finite"
print("loaded %s: step %d" % (sys.argv[1], state["step"]))
