# gpurent: the default checkpoint load check (lifecycle/capsule.lua), run on the box
# with the image's interpreter before a checkpoint is synced as durable or sealed:
# torch.load on the CPU with weights_only=True (no pickled code runs). Exit 0: it
# loads; 1: it does not; 3: this interpreter has no torch, so nothing was checked.
import sys
path = sys.argv[1]
try:
    import torch
except Exception as e:
    print("gpurent load check: no torch in %s (%s: %s): the default load check cannot run; "
          "give box_load=CMD ({} = the checkpoint) or install torch" % (sys.executable, type(e).__name__, e))
    sys.exit(3)
try:
    torch.load(path, map_location="cpu", weights_only=True)
except Exception as e:
    print("gpurent load check: %s does not load with torch %s (weights_only=True, map_location=cpu): %s: %s"
          % (path, torch.__version__, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
    sys.exit(1)
print("gpurent load check: %s loads (torch %s, weights_only=True, map_location=cpu)" % (path, torch.__version__))
