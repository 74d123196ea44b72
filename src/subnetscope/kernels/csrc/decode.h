/* Decoders, counters and dispatch shared by the counting kernels of compare.c and series.c. */
#ifndef SUBNETSCOPE_DECODE_H
#define SUBNETSCOPE_DECODE_H

#include <math.h>

#include "native.h"

static inline float bf16_f32(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float u32_f32(uint32_t x) {
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static inline double u64_f64(uint64_t x) {
    double f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* decoders: DEC_<code>(bits) -> a value whose float conversion is exact */
#define DEC_BF16(x) bf16_f32(x)
#define DEC_LUT(x) lut[x]
#define DEC_F32(x) u32_f32(x)
#define DEC_F64(x) u64_f64(x)

/* out[0..6] (ADD7) or out[0..7] (ADD8) += the counters of one loop */
#define ADD7(out, c0, c1, c2, c3, c4, c5, c6)                                                              \
    do {                                                                                                 \
        (out)[0] += (c0);                                                                                \
        (out)[1] += (c1);                                                                                \
        (out)[2] += (c2);                                                                                \
        (out)[3] += (c3);                                                                                \
        (out)[4] += (c4);                                                                                \
        (out)[5] += (c5);                                                                                \
        (out)[6] += (c6);                                                                                \
    } while (0)
#define ADD8(out, c0, c1, c2, c3, c4, c5, c6, c7)                                                          \
    do {                                                                                                 \
        ADD7(out, c0, c1, c2, c3, c4, c5, c6);                                                           \
        (out)[7] += (c7);                                                                                \
    } while (0)

/* |y - x|: exact (float64 difference) or reference (torch's float32 difference, then widened) */
#define DIFF(REF, fx, fy) ((REF) ? (double)fabsf((float)(fy) - (float)(fx)) : fabs((double)(fy) - (double)(fx)))

/* ------------------------------------------------------------------------------------------------------
 * Fast variants: the difference in float32 (16 lanes per AVX-512 vector instead of 8), in blocks of BLK
 * elements, falling back to the float64 loops above for a block where float32 cannot decide.
 *
 * For inputs exact in float32 (bf16, fp16, fp8, fp32), d32 = fl32(|y - x|) is the rounding of the exact
 * difference d, and rounding is monotone: with R = fl32(T), d32 < R implies d <= T and d32 > R implies
 * d > T. Only d32 == R is undecided; such a block (rare: it needs a difference equal to a float32 next to
 * the tolerance) is recounted in float64. The caller passes le[k] = the largest float32 below R (so
 * "d32 <= le" is "d32 < R") and amb[k] = R. For reference semantics the float32 difference is the
 * definition, so le[k] is T rounded down to float32 and amb[k] is NaN (never equal). Bit-identical
 * elements get d32 = -1, below every threshold and never undecided.
 */
#define BLK SS_BLK

static inline uint32_t f32_u32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* FP8 by bit arithmetic instead of a table gather (vectorises without gathers). The 7 magnitude bits moved
 * to the bottom of a float32's exponent field give 2**(127 - bias) times the value, normals and subnormals
 * alike, and the product with a power of two is exact. NaN is 0x7FC00000, as in the decode table. */
static inline float e4m3_f32(uint8_t x) {
    const uint32_t m = x & 0x7Fu;
    const uint32_t bits = f32_u32(u32_f32(m << 20) * 0x1p120f) | ((uint32_t)(x & 0x80u) << 24);
    return u32_f32(m == 0x7Fu ? 0x7FC00000u : bits); /* e4m3fn: S.1111.111 is NaN, there is no Inf */
}

static inline float e5m2_f32(uint8_t x) {
    const uint32_t m = x & 0x7Fu, sign = (uint32_t)(x & 0x80u) << 24;
    const uint32_t bits = f32_u32(u32_f32(m << 21) * 0x1p112f) | sign;
    const uint32_t special = (m & 3u) ? 0x7FC00000u : (0x7F800000u | sign); /* exponent 31: NaN or Inf */
    return u32_f32(m >= 0x7Cu ? special : bits);
}

#define DEC32_BF16(x) bf16_f32(x)
#define DEC32_LUT(x) lut32[x]
#define DEC32_F32(x) u32_f32(x)
#define DEC32_E4M3(x) e4m3_f32(x)
#define DEC32_E5M2(x) e5m2_f32(x)

/* ------------------------------------------------------------------------------------------------------
 * exported entry points. ``fast`` selects the float32 variants (le/amb as described above; ignored for
 * fp64). Codes 5 and 6 (fp8 e4m3 / e5m2 by bit arithmetic) fall back on the 8-bit table variants (code
 * 2). Return 0, or -1 for an unknown code (the caller checks).
 */
#define SLOW_CODE(code) ((code) == 5 || (code) == 6 ? 2 : (code))

#define DISPATCH(PREFIX, ref, code, ...)                                                                   \
    switch (SLOW_CODE(code) * 2 + ((ref) ? 1 : 0)) {                                                              \
    case 0: PREFIX##_bf16_x(__VA_ARGS__); return 0;                                                      \
    case 1: PREFIX##_bf16_r(__VA_ARGS__); return 0;                                                      \
    case 2: PREFIX##_lut16_x(__VA_ARGS__); return 0;                                                     \
    case 3: PREFIX##_lut16_r(__VA_ARGS__); return 0;                                                     \
    case 4: PREFIX##_lut8_x(__VA_ARGS__); return 0;                                                      \
    case 5: PREFIX##_lut8_r(__VA_ARGS__); return 0;                                                      \
    case 6: PREFIX##_f32_x(__VA_ARGS__); return 0;                                                       \
    case 7: PREFIX##_f32_r(__VA_ARGS__); return 0;                                                       \
    case 8: PREFIX##_f64_x(__VA_ARGS__); return 0;                                                       \
    default: return -1;                                                                                  \
    }

#define DISPATCH_FAST(PREFIX, code, ...)                                                                   \
    switch (code) {                                                                                      \
    case 0: PREFIX##_bf16(__VA_ARGS__); return 0;                                                        \
    case 1: PREFIX##_lut16(__VA_ARGS__); return 0;                                                       \
    case 2: PREFIX##_lut8(__VA_ARGS__); return 0;                                                        \
    case 3: PREFIX##_f32(__VA_ARGS__); return 0;                                                         \
    case 5: PREFIX##_e4m3(__VA_ARGS__); return 0;                                                        \
    case 6: PREFIX##_e5m2(__VA_ARGS__); return 0;                                                        \
    default: return -1;                                                                                  \
    }

#endif
