/*
 * The extension subnetscope.kernels._native: the C versions of the hot loops of subnetscope.kernels
 * (compare.c, series.c, fp8.c, delta.c and the AVX-512 variants in avx512.c). They compute exactly what the
 * numba and numpy kernels compute, and are called through ctypes from kernels/native.py (ctypes releases
 * the GIL, so the engine's threads run them in parallel). Compiled as an optional extension: without a C
 * compiler subnetscope falls back to numba.
 *
 * Why C as well as numba: a fresh process pays about 0.5 s to import numba and load a cached kernel,
 * which is as long as reading a 1B-parameter pair from the page cache; this library loads in a few
 * milliseconds. The loops are plain C that GCC vectorises; on x86-64 Linux each is compiled three times
 * (baseline, x86-64-v3 = AVX2, x86-64-v4 = AVX-512) and the loader picks the best one for the CPU.
 *
 * Decode codes (native._CODES): 0 bf16 (shift into float32 bits), 1 16-bit table (fp16), 2 8-bit table
 * (fp8), 3 fp32 (view), 4 fp64 (view), 5 fp8 e4m3 and 6 fp8 e5m2 (bit arithmetic). Tables are passed both
 * as float64 and as float32 values.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "native.h"

/* bumped whenever an exported signature changes; native.py refuses a library built from other sources */
SS_EXPORT int ss_abi_version(void) { return SS_ABI_VERSION; }

/* 1: run the AVX-512 kernels the CPU can run (native.py's default), 0: the plain C loops only. Returns
 * ss_simd_level: 0 none, 1 the series kernel, 2 the delta gather as well (it needs VBMI2). */
SS_EXPORT int ss_set_avx512(int on) {
    ss_simd_level = on ? ss_simd_detect() : 0;
    return ss_simd_level;
}


/* ------------------------------------------------------------------------------------------------------
 * the module itself has no Python functions: native.py loads this file with ctypes */
static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                                           "C kernels, called through ctypes by subnetscope.kernels.native.", -1,
                                           NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
