"""Is there a CUDA GPU here? Asked of the NVIDIA driver itself (``libcuda``), not of the libraries.

An installed onnxruntime-gpu or tensorrt says only that a CUDA build is present; ``device_count()``
calls the driver API (``cuInit``, ``cuDeviceGetCount``) through ctypes, so it needs neither torch nor
cuda-python, and is 0 on a machine without a driver or without a visible device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# The driver library's names on Linux and Windows.
DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


@functools.lru_cache(maxsize=1)
def device_count() -> int:
    """CUDA devices the driver sees (0 without a driver, without a GPU or when CUDA_VISIBLE_DEVICES hides them)."""
    driver = _driver()
    if driver is None or driver.cuInit(0) != 0:
        return 0
    count = ctypes.c_int(0)
    return count.value if driver.cuDeviceGetCount(ctypes.byref(count)) == 0 else 0


def _driver():
    for name in DRIVER_LIBRARIES + tuple(filter(None, [ctypes.util.find_library("cuda")])):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


# cuDeviceGetAttribute attributes
COMPUTE_CAPABILITY_MAJOR = 75
COMPUTE_CAPABILITY_MINOR = 76


def compute_capability(device_id: int = 0) -> str | None:
    """``"major.minor"`` of CUDA device ``device_id`` (None when the driver does not see it)."""
    if device_id >= device_count():
        return None
    driver = _driver()
    device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if driver.cuDeviceGet(ctypes.byref(device), device_id) != 0:
        return None
    for value, attribute in ((major, COMPUTE_CAPABILITY_MAJOR), (minor, COMPUTE_CAPABILITY_MINOR)):
        if driver.cuDeviceGetAttribute(ctypes.byref(value), attribute, device) != 0:
            return None
    return f"{major.value}.{minor.value}"
