#!/usr/bin/python3
"""Live reference for diffusion's TestGuidedLoopMatchesLivePyTorch.

    /usr/bin/python3 loop_reference.py OUT.safetensors

runs make_golden.py's guided 1000-step ancestral loop (the small Cell_Unet,
classifier guidance, generator seed 13) on this machine and writes the final
sample as "loop.psample.t1000". The Go test runs it through
cgotorchtest.LiveReference, so both sides use the same libtorch, OpenBLAS
kernels and thread count; a golden file made on another CPU would compare
1000 model evaluations' worth of last-bit differences instead.
"""
import importlib.util
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("diffusion_golden", os.path.join(HERE, "make_golden.py"))
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)

if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("GOTORCH_TEST_THREADS", "1")))
    model, cls1, _ = golden.models()
    golden.write_safetensors(sys.argv[1], {"loop.psample.t1000": golden.guided_loop_t1000(model, cls1)},
                             {"torch": torch.__version__})
