/* Shared by the C sources of subnetscope._native (see _native.c). */
#ifndef SUBNETSCOPE_NATIVE_H
#define SUBNETSCOPE_NATIVE_H

#include <stdint.h>
#include <string.h>

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

/* the AVX-512 series kernel for bf16 (_native_avx512.c); ss_avx512_ok says whether this CPU can run it */
int ss_avx512_ok(void);
int ss_series_block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                         int64_t *counts, int64_t *out, int64_t *split4);

#endif
