"""CUDA in Tessera's Bazel build: kernels compiled by nvcc, when CUDA was found.

@local_cuda (//third_party/cuda:cuda_configure.bzl) says whether it was. BUILD
files choose sources with if_cuda(); cuda_kernels() compiles .cu files into a
static library for sm_80 and sm_90 plus PTX for newer chips, with nvcc run
in a genrule (Bazel 4.2.3 has no CUDA rules offline).
"""

load("@local_cuda//:defs.bzl", "CUDA_ENABLED", "NVCC")

# Real machine code for A100-class (sm_80) and Hopper (sm_90) GPUs, and
# compute_90 PTX that the driver compiles for anything newer.
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-Xcompiler=-fPIC,-Wall",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-I.",
]

def if_cuda(with_cuda, without_cuda = []):
    return with_cuda if CUDA_ENABLED else without_cuda

def cuda_kernels(name, srcs, hdrs, deps = []):
    """A cc_library of CUDA kernels (srcs: .cu) with host launchers in hdrs.

    Without CUDA it is an empty library: nothing may depend on it then
    except through if_cuda().
    """
    if not CUDA_ENABLED:
        native.cc_library(name = name, hdrs = hdrs)
        return
    archive = "lib" + name + "_device.a"
    native.genrule(
        name = name + "_nvcc",
        srcs = srcs + hdrs,
        outs = [archive],
        cmd = "%s %s -lib -o $@ %s" % (
            NVCC,
            " ".join(NVCC_FLAGS),
            " ".join(["$(location %s)" % s for s in srcs]),
        ),
        message = "nvcc " + name,
    )
    native.cc_library(
        name = name,
        srcs = [archive],
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"],
    )
