"""Is there a CUDA GPU here? Asked of the NVIDIA driver, not of onnxruntime.

onnxruntime-gpu lists CUDAExecutionProvider as available on every machine and, asked for it
where there is no GPU, prints a red error and a warning before it runs on the CPU anyway. The
driver's own answer (libcuda: `cuInit`, `cuDeviceGetCount`) costs a few milliseconds and
lets the loader ask for CUDA only where it can run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

CUDA_SUCCESS = 0


@functools.cache
def cuda_gpus() -> tuple[int, str]:
    """(the number of CUDA GPUs the driver sees, why there is none when 0; "" otherwise)."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        driver = ctypes.CDLL(name)
    except OSError:
        found = ctypes.util.find_library("cuda")
        if found is None:
            return 0, f"no NVIDIA driver ({name} not found)"
        try:
            driver = ctypes.CDLL(found)
        except OSError as e:
            return 0, f"the NVIDIA driver {found} cannot be loaded ({e})"
    code = driver.cuInit(0)
    if code != CUDA_SUCCESS:
        return 0, f"the NVIDIA driver finds no usable GPU (cuInit error {code})"
    count = ctypes.c_int(0)
    code = driver.cuDeviceGetCount(ctypes.byref(count))
    if code != CUDA_SUCCESS or count.value < 1:
        return 0, "the NVIDIA driver finds no GPU"
    return count.value, ""
