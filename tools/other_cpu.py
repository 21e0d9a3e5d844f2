"""Run a command as on another x86-64 CPU: ``python tools/other_cpu.py pytest -q``.

A test, or a printed number in the course, that passes only on the CPU it was written on
(its vector width, whether it fuses multiply-adds) fails for the next person. This runs
the command with the widest vector code of both compilers turned off:

* on a CPU with AVX-512: NumPy without its AVX-512 kernels, Numba without AVX-512;
* on any other: NumPy without AVX2 and FMA (its x86-64-v2 baseline), Numba without AVX2,
  FMA and AVX-512;

each kernel compiled afresh into an empty ``NUMBA_CACHE_DIR`` (the cache is per CPU
model, and a cache filled natively must not hide a compile), removed afterwards. On a CPU
with AVX-512 this keeps FMA; on a CPU without AVX-512 it tests without FMA.
``NUMBA_CPU_NAME`` alone is not enough: Numba still asks for the host's features unless
``NUMBA_CPU_FEATURES`` says otherwise, so both are set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512vnni",
          "avx512bf16", "avx512vbmi", "avx512vbmi2", "avx512ifma", "avx512bitalg",
          "avx512vpopcntdq", "avx512fp16", "avx512vp2intersect", "avxvnni", "avx10.1-256",
          "avx10.1-512", "evex512")
WIDE = ("avx2", "fma", "fma4", "vpclmulqdq", "vaes", "f16c", "avxifma", "avxvnniint8")


def environment() -> dict[str, str]:
    """The variables that make this machine's compilers target a narrower CPU."""
    from llvmlite import binding

    binding.initialize_native_target()
    features = binding.get_host_cpu_features()
    has_avx512 = features.get("avx512f", False)
    drop = AVX512 if has_avx512 else AVX512 + WIDE
    wanted = ",".join(f"{'+' if on and name not in drop else '-'}{name}"
                      for name, on in sorted(features.items()))
    return {
        "NPY_DISABLE_CPU_FEATURES": ("X86_V4 AVX512_ICL AVX512_SPR" if has_avx512
                                     else "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"),
        "NUMBA_CPU_NAME": binding.get_host_cpu_name(),
        "NUMBA_CPU_FEATURES": wanted,
        "NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix="tinynn-other-cpu-"),
        "TINYNN_OTHER_CPU": "without AVX-512" if has_avx512 else "without AVX2 and FMA",
    }


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    env = environment()
    print(f"tools/other_cpu.py: as on a CPU {env['TINYNN_OTHER_CPU']} "
          f"(NPY_DISABLE_CPU_FEATURES={env['NPY_DISABLE_CPU_FEATURES']!r}, Numba for "
          f"{env['NUMBA_CPU_NAME']} less those features, cache {env['NUMBA_CACHE_DIR']})",
          flush=True)
    try:
        code = subprocess.run(sys.argv[1:], env={**os.environ, **env}).returncode
    finally:
        shutil.rmtree(env["NUMBA_CACHE_DIR"], ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
