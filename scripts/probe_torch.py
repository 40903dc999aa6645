#!/usr/bin/env python3
"""Prints the make variables (cgotorch/build/cuda/torch.mk) that build the
CUDA flavour of libcgotorch.so against an installed libtorch with CUDA
(binding.md §3.3): probe, don't assume.

    probe_torch.py                  the torch of this Python (a pip wheel);
                                    `make shim FLAVOR=cuda TORCH_PYTHON=/venv/bin/python3`
    probe_torch.py --prefix DIR     a libtorch laid out under DIR without Python:
                                    Debian's libtorch-cuda-dev (DIR/usr/include,
                                    DIR/usr/lib/<multiarch>; scripts/ci-cuda.sh)
                                    or the libtorch zip (DIR/include, DIR/lib);
                                    `make shim FLAVOR=cuda TORCH_PREFIX=DIR`
    probe_torch.py [--prefix DIR] --check SHIM
                                    checks a built CUDA shim against that libtorch:
                                    it links libtorch_cuda, c10_cuda, the CUDA
                                    runtime and the OpenMP runtime libtorch uses
                                    (the same files); exit status 1 if not

Everything the link needs is read from the libraries themselves: the CUDA
runtime and the OpenMP runtime are the ones libtorch_cuda.so and
libtorch_cpu.so load (their DT_NEEDED names resolved through their own
RUNPATH, as the dynamic loader does), so the shim never brings a second
copy of either. c10's inline CUDA checks call cudaGetLastError and
cudaGetErrorString, so the shim links the CUDA runtime itself; at::parallel_for
is an inline OpenMP loop, so the shim is compiled with -fopenmp and linked
to libtorch's own OpenMP runtime (a wheel bundles its libgomp).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

MULTIARCH = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
SYSTEM_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]


def die(msg):
    sys.exit("probe_torch: " + msg)


def dynamic(lib):
    """DT_NEEDED names and RUNPATH/RPATH directories ($ORIGIN expanded) of lib."""
    if shutil.which("readelf") is None:
        die("readelf not found (install binutils)")
    out = subprocess.run(["readelf", "-d", lib], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    paths = []
    # $ORIGIN: the folder the loader found lib in (as named, symlinks not resolved).
    origin = os.path.dirname(os.path.abspath(lib))
    for m in re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library (?:runpath|rpath): \[([^\]]*)\]", out):
        for p in m.split(":"):
            p = p.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
            if p:
                paths.append(os.path.normpath(p))
    return needed, paths


def ldconfig_dirs(soname):
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [os.path.dirname(line.split("=>")[-1].strip()) for line in out.splitlines()
            if line.strip().startswith(soname + " ")]


def resolve(soname, lib, extra_dirs):
    """The file the dynamic loader would load for soname, needed by lib."""
    _, runpath = dynamic(lib)
    env = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    for d in runpath + extra_dirs + env + ldconfig_dirs(soname) + SYSTEM_DIRS:
        f = os.path.join(d, soname)
        if os.path.exists(f):
            return os.path.realpath(os.path.dirname(f)), f
    return None, None


def find_lib(libdir, name):
    for f in [os.path.join(libdir, name)] + sorted(glob.glob(os.path.join(libdir, name + ".*"))):
        if os.path.exists(f):
            return f
    return None


def header_version(incdir):
    """(major, minor) from torch/version.h."""
    for f in [os.path.join(incdir, "torch", "csrc", "api", "include", "torch", "version.h"),
              os.path.join(incdir, "torch", "version.h")]:
        if os.path.isfile(f):
            text = open(f).read()
            ma = re.search(r"#define TORCH_VERSION_MAJOR (\d+)", text)
            mi = re.search(r"#define TORCH_VERSION_MINOR (\d+)", text)
            if ma and mi:
                return int(ma.group(1)), int(mi.group(1))
    die("torch/version.h not found under " + incdir)


def cxx11_abi(libc10):
    """1 when libc10 was built with the C++11 std::string ABI (its symbols name std::__cxx11)."""
    with open(libc10, "rb") as f:
        return 1 if b"St7__cxx11" in f.read() else 0


def probe_python():
    try:
        import torch  # noqa: PLC0415 (only in this mode)
    except ImportError as e:
        die("%s cannot import torch (%s): set TORCH_PYTHON to a Python with a CUDA torch, or TORCH_PREFIX" % (sys.executable, e))

    tdir = os.path.dirname(torch.__file__)
    if not torch.version.cuda:
        die("this torch (%s, %s) has no CUDA" % (torch.__version__, torch.__file__))
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return {
        "what": "torch %s (CUDA %s) at %s" % (torch.__version__, torch.version.cuda, tdir),
        "incdir": os.path.join(tdir, "include"),
        "libdir": os.path.join(tdir, "lib"),
        "abi": int(torch._C._GLIBCXX_USE_CXX11_ABI),
        "version": (major, minor),
    }


def probe_prefix(prefix):
    prefix = os.path.abspath(prefix)
    for incdir, libdirs in [(os.path.join(prefix, "usr", "include"), [os.path.join(prefix, "usr", "lib", m) for m in MULTIARCH]),
                            (os.path.join(prefix, "include"), [os.path.join(prefix, "lib")] + [os.path.join(prefix, "lib", m) for m in MULTIARCH])]:
        for libdir in libdirs:
            if find_lib(libdir, "libtorch_cuda.so") and os.path.isdir(os.path.join(incdir, "c10", "cuda")):
                c10 = find_lib(libdir, "libc10.so")
                if c10 is None:
                    die("libc10.so not found in " + libdir)
                return {
                    "what": "libtorch under %s" % prefix,
                    "incdir": incdir,
                    "libdir": libdir,
                    "abi": cxx11_abi(c10),
                    "version": header_version(incdir),
                }
    die("no libtorch with CUDA under %s (want libtorch_cuda.so and c10/cuda headers in usr/lib/<multiarch> and "
        "usr/include, or in lib and include)" % prefix)


def cuda_runtime(info):
    """The CUDA runtime libtorch_cuda.so loads: (directory, soname)."""
    tcuda = find_lib(info["libdir"], "libtorch_cuda.so")
    if tcuda is None:
        die("libtorch_cuda.so not found in %s: not a CUDA build" % info["libdir"])
    # libtorch_cuda may reach libcudart only through libc10_cuda.
    for lib in [tcuda, find_lib(info["libdir"], "libc10_cuda.so")]:
        if lib is None:
            continue
        needed, _ = dynamic(lib)
        for n in needed:
            if n.startswith("libcudart.so"):
                d, _ = resolve(n, lib, [info["libdir"]])
                if d is None:
                    die("%s needs %s, which is found neither through its RUNPATH nor on the system "
                        "(pip: the nvidia-cuda-runtime wheel)" % (os.path.basename(lib), n))
                return d, n
    die("neither libtorch_cuda.so nor libc10_cuda.so links the CUDA runtime (libcudart)")


def cuda_headers(info, cudart_dir):
    """Directories holding cuda_runtime_api.h: the runtime's own first (the
    wheel's nvidia/.../include), then libtorch's and a CUDA toolkit's for any
    header the runtime's folder lacks."""
    cands = [os.path.join(os.path.dirname(cudart_dir), "include"), info["incdir"]]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "include"))
    cands += ["/usr/local/cuda/include"]
    found = []
    for d in cands:
        if os.path.isfile(os.path.join(d, "cuda_runtime_api.h")) and os.path.realpath(d) not in [os.path.realpath(f) for f in found]:
            found.append(d)
    if not found:
        die("cuda_runtime_api.h not found (looked in %s)" % ", ".join(cands))
    return found


def nccl_headers(info, cudart_dir):
    """The directory holding nccl.h, for the shim's NCCL process group
    (cgotorch/csrc/dist.cc compiles it only when nccl.h is found): the
    nvidia-nccl wheel's next to the CUDA runtime's or torch's (pip), else
    libtorch's own include folder or a CUDA toolkit's (libnccl-dev in a
    prefix). [] when there is none: the shim is then built without NCCL."""
    cands = [os.path.join(os.path.dirname(os.path.dirname(cudart_dir)), "nccl", "include"),
             os.path.join(os.path.dirname(os.path.dirname(info["libdir"])), "nvidia", "nccl", "include"),
             info["incdir"], "/usr/local/cuda/include", "/usr/include"]
    for d in cands:
        if os.path.isfile(os.path.join(d, "nccl.h")):
            # The system's folder is searched anyway; -isystem /usr/include
            # would break #include_next in the C++ library's headers.
            return [] if os.path.realpath(d) == "/usr/include" else [d]
    return []


def torch_openmp(info):
    """(soname, directory) of the OpenMP runtime libtorch_cpu.so loads, or (None, None)."""
    cpu = find_lib(info["libdir"], "libtorch_cpu.so")
    if cpu is None:
        die("libtorch_cpu.so not found in " + info["libdir"])
    needed, _ = dynamic(cpu)
    for n in needed:
        if n.startswith(("libgomp", "libiomp", "libomp")):
            d, _ = resolve(n, cpu, [info["libdir"]])
            if d is None:
                die("libtorch_cpu.so needs %s, which is not found" % n)
            return n, d
    return None, None


def openmp(info):
    """(compile flags, link flags, folder for the RUNPATH or None) for
    libtorch's own OpenMP runtime."""
    n, d = torch_openmp(info)
    if n is None:
        # libtorch built without OpenMP (at::parallel_for uses its own pool): nothing to share.
        return "", "", None
    if n == "libgomp.so.1" and d in [os.path.realpath(s) for s in SYSTEM_DIRS]:
        return "-fopenmp", "-fopenmp", None  # the compiler's own libgomp is libtorch's
    # A bundled runtime (the wheel's libgomp-<hash>.so.1, conda's libgomp):
    # compile the pragmas with -fopenmp but link that file, not the
    # compiler's -lgomp, and find it where libtorch does.
    return "-fopenmp", "-pthread -L%s -l:%s" % (d, n), d


def check(info, shim):
    """Checks that shim links what libtorch links, resolving to the same files."""
    needed, _ = dynamic(shim)
    ok = True

    def report(good, msg):
        nonlocal ok
        ok = ok and good
        print("%s %s" % ("ok  " if good else "FAIL", msg))

    for lib in ["libtorch_cuda.so", "libc10_cuda.so"]:
        report(any(n.startswith(lib) for n in needed), "%s links %s" % (os.path.basename(shim), lib))
    want = [cuda_runtime(info)[1]]
    omp, _ = torch_openmp(info)
    if omp is not None:
        want.append(omp)
    for n in want:
        if n not in needed:
            report(False, "%s does not link %s, which libtorch uses" % (os.path.basename(shim), n))
            continue
        owner = find_lib(info["libdir"], "libtorch_cuda.so" if n.startswith("libcudart") else "libtorch_cpu.so")
        mine, theirs = resolve(n, shim, [])[1], resolve(n, owner, [info["libdir"]])[1]
        same = mine is not None and theirs is not None and os.path.realpath(mine) == os.path.realpath(theirs)
        report(same, "%s resolves to %s, as for %s (%s)" % (n, mine, os.path.basename(owner), theirs))
    others = [n for n in needed if n.startswith(("libgomp", "libiomp", "libomp", "libcudart")) and n not in want]
    report(not others, "no second CUDA or OpenMP runtime%s" % (": " + " ".join(others) if others else ""))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefix", help="a libtorch installed under this directory instead of Python's torch")
    ap.add_argument("--check", metavar="SHIM", help="check a built libcgotorch.so against that libtorch")
    a = ap.parse_args()
    info = probe_prefix(a.prefix) if a.prefix else probe_python()
    if a.check:
        sys.exit(0 if check(info, a.check) else 1)
    cudart_dir, cudart = cuda_runtime(info)
    omp_c, omp_l, omp_dir = openmp(info)
    incs = [info["incdir"], os.path.join(info["incdir"], "torch", "csrc", "api", "include")]
    incs += [d for d in cuda_headers(info, cudart_dir) if d not in incs]
    incs += [d for d in nccl_headers(info, cudart_dir) if d not in incs]
    rpath = [info["libdir"]]
    for d in [cudart_dir, omp_dir]:
        if d is not None and os.path.realpath(d) not in [os.path.realpath(r) for r in rpath]:
            rpath.append(d)
    same = os.path.realpath(cudart_dir) == os.path.realpath(info["libdir"])
    cudart_l = ("" if same else "-L%s " % cudart_dir) + "-l:" + cudart
    print("# generated by scripts/probe_torch.py for %s" % info["what"])
    print("TORCH_DIR := %s" % os.path.dirname(info["libdir"]))
    print("TORCH_LIBDIR := %s" % info["libdir"])
    print("TORCH_ABI := %d" % info["abi"])
    print("TORCH_DEFS := -DCGT_WITH_CUDA")
    # -isystem: libtorch's and CUDA's headers are not ours to keep -Werror clean.
    print("TORCH_INC := %s" % " ".join("-isystem " + d for d in incs))
    # libtorch_cuda registers its kernels in static initialisers and the shim
    # barely references it, so --as-needed would drop it: link it explicitly.
    print("TORCH_LIBS := -L%s -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed -ltorch -ltorch_cpu -lc10 "
          "%s -Wl,--enable-new-dtags -Wl,-rpath,%s" % (info["libdir"], cudart_l, ":".join(rpath)))
    print("TORCH_RUNTIME_DIRS := %s" % ":".join(rpath))
    print("OPENMP_CFLAGS := %s" % omp_c)
    print("OPENMP_LIBS := %s" % omp_l)
    print("TORCH_VERSION_PROBED := %d.%d" % info["version"])


if __name__ == "__main__":
    main()
