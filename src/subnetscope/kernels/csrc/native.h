/* Shared by the C sources of subnetscope.kernels._native (see module.c). */
#ifndef SUBNETSCOPE_NATIVE_H
#define SUBNETSCOPE_NATIVE_H

#include <stdint.h>
#include <string.h>

/* what ss_abi_version() returns (module.c): bumped whenever an exported signature or the set of sources
 * changes; kernels/native.py (ABI_VERSION) refuses a library built from other sources */
#define SS_ABI_VERSION 8

/* each hot loop is compiled for baseline x86-64, AVX2 and AVX-512; the loader picks one for the CPU */
#if defined(SS_CLONES)
/* set by the build */
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SS_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define SS_CLONES
#endif

#if defined(_WIN32)
#define SS_EXPORT __declspec(dllexport)
#else
#define SS_EXPORT __attribute__((visibility("default")))
#endif

/* elements per block: the float32 kernels decide (or recount in float64) a block at a time */
#define SS_BLK 2048

/* The AVX-512 kernels (avx512.c). ss_simd_detect: 0 no AVX-512 (F, BW, DQ), 1 AVX-512, 2 with
 * VBMI2 as well; ss_simd_level is what the kernels may use (set by ss_set_avx512 in module.c). */
extern int ss_simd_level;
int ss_simd_detect(void);
/* the element widths of the delta kernels: bytes, type, lanes of a zmm register, its mask type, and the
 * suffix of the intrinsics */
#define SS_WIDTHS(X)                                                                                       \
    X(1, uint8_t, 64, __mmask64, epi8)                                                                   \
    X(2, uint16_t, 32, __mmask32, epi16)                                                                 \
    X(4, uint32_t, 16, __mmask16, epi32)                                                                 \
    X(8, uint64_t, 8, __mmask8, epi64)
#define SS_DECLARE_DELTA512(W, T, LANES, MASK, SUF)                                                        \
    int64_t ss_diff_pack512_##W(const T *a, const T *b, int64_t n, uint8_t *bitmap, T *values);          \
    int64_t ss_scatter_bitmap512_##W(T *out, int64_t n, const uint8_t *bitmap, const T *values, int64_t m);
SS_WIDTHS(SS_DECLARE_DELTA512)
int ss_series_block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                         int64_t *counts, int64_t *out, int64_t *split4);

#endif
