"""The environment a result was measured in: machine, BLAS and its kernel, torch build, variables.

Two numbers from different machines or BLAS kernels are not comparable, so every result carries
this record. On some machines ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` are set and make
OpenBLAS pick slower kernels (AVX2 instead of AVX-512); the BLAS entry's ``architecture`` (the
kernel OpenBLAS chose, from threadpoolctl) and the recorded variables show which ran.
"""

from __future__ import annotations

import os
import platform
import re
import sys

# Variables that change which kernels or how many threads the backends use.
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "GOMP_", "KMP_", "MKL_", "GOTO_", "BLIS_", "ATEN_",
                "CUDA_VISIBLE_DEVICES")


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def machine() -> dict:
    return dict(cpu=cpu_model(), logical_cpus=os.cpu_count(), usable_cores=usable_cores(),
                system=f"{platform.system()} {platform.release()}", python=sys.version.split()[0],
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def blas_libraries() -> list[dict]:
    """threadpoolctl's view of every loaded thread pool: BLAS name, version, kernel, threads.

    ``owner`` says whose it is (numpy, torch or other), from the library's path.
    """
    from threadpoolctl import threadpool_info
    libs = []
    for info in threadpool_info():
        path = info.get("filepath", "")
        owner = ("numpy" if "numpy" in path else "torch" if "torch" in path else "other")
        libs.append(dict(owner=owner, user_api=info.get("user_api"),
                         internal_api=info.get("internal_api"), prefix=info.get("prefix"),
                         version=info.get("version"),
                         architecture=info.get("architecture"),   # OpenBLAS's kernel (corename)
                         threading_layer=info.get("threading_layer"),
                         num_threads=info.get("num_threads"), file=os.path.basename(path)))
    return libs


def numpy_info() -> dict:
    import numpy as np
    info = dict(version=np.__version__)
    try:
        cfg = np.show_config(mode="dicts")
        info["simd"] = cfg.get("SIMD Extensions", {})
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas_build"] = dict(name=blas.get("name"), version=blas.get("version"),
                                  configuration=blas.get("openblas configuration"))
    except Exception as exc:
        info["show_config_error"] = repr(exc)
    return info


def torch_info() -> dict:
    import torch
    cfg = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", cfg)
    info = dict(version=torch.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                blas=blas.group(1) if blas else None,
                mkl=torch.backends.mkl.is_available(),
                mkldnn=torch.backends.mkldnn.is_available(),
                openmp=torch.backends.openmp.is_available(),
                num_threads=torch.get_num_threads(),
                num_interop_threads=torch.get_num_interop_threads(),
                cuda=torch.cuda.is_available(),
                cuda_version=torch.version.cuda)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def relevant_env() -> dict:
    """Environment variables that select kernels or thread counts, with their values."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def environment() -> dict:
    """The full record stored with every result."""
    return dict(machine=machine(), numpy=numpy_info(), blas=blas_libraries(),
                torch=torch_info(), env=relevant_env())


def summary_lines(env: dict) -> list[str]:
    """A few human lines: machine, NumPy's BLAS and kernel, torch build, kernel variables."""
    m, t = env["machine"], env["torch"]
    lines = [f"machine: {m['cpu']}, {m['usable_cores']} usable cores, {m['system']}, "
             f"Python {m['python']}"]
    np_blas = [b for b in env["blas"] if b["owner"] == "numpy" and b["user_api"] == "blas"]
    for b in np_blas:
        lines.append(f"NumPy {env['numpy']['version']}: {b['internal_api']} {b['version']}, "
                     f"kernel {b['architecture']}, {b['threading_layer']} threads")
    if not np_blas:
        lines.append(f"NumPy {env['numpy']['version']}: BLAS not seen by threadpoolctl")
    lines.append(f"torch {t['version']}: BLAS {t['blas']}, CPU capability {t['cpu_capability']}, "
                 f"mkldnn {t['mkldnn']}, OpenMP {t['openmp']}"
                 + (f", GPU {t['gpu']}" if t.get("gpu") else ", no GPU"))
    kernel_vars = {k: v for k, v in env["env"].items() if k.startswith("OPENBLAS_")}
    lines.append("OPENBLAS_* variables: " + (", ".join(f"{k}={v}" for k, v in kernel_vars.items())
                                            or "none set"))
    return lines
