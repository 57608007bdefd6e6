# gpurent: what torch sees on the box (gotchas/universal.lua U-NOGPU), run by
# gotcha_nogpu.sh with the profile's interpreter; takes no values.
import sys
try:
    import torch
except Exception as e:
    print("torch_err", type(e).__name__, str(e).splitlines()[0] if str(e) else ""); sys.exit(0)
print("torch", torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())
