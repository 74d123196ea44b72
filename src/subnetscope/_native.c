/*
 * Native (C) versions of the two hot loops: compare's fused per-chunk count (and its mask bits) and the
 * series step. They compute exactly what the numba kernels in kernels.py and series_kernels.py compute,
 * and are called through ctypes from native.py (ctypes releases the GIL, so the engine's threads run them
 * in parallel). Compiled as an optional extension: without a C compiler subnetscope falls back to numba.
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

#include <math.h>

#include "_native.h"

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
 * compare: out[0..3] += #(|d| <= t_k); out[4] += identical; out[5], out[6] += non-finite base / target.
 * A bit-identical pair counts as d = 0 (NaN included).
 */
#define DEF_COUNT4(NAME, T, DEC, REF)                                                                      \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict b, int64_t n,                      \
                               const double *restrict lut, const double *restrict t, T nfm, T nfv,       \
                               int64_t *restrict out) {                                                  \
        (void)lut;                                                                                       \
        const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];                                         \
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, id = 0, na = 0, nb = 0;                                  \
        for (int64_t i = 0; i < n; i++) {                                                                \
            const T x = a[i], y = b[i];                                                                  \
            const int eq = x == y;                                                                       \
            double d = DIFF(REF, DEC(x), DEC(y));                                                        \
            d = eq ? 0.0 : d;                                                                            \
            id += eq;                                                                                    \
            na += (x & nfm) == nfv;                                                                      \
            nb += (y & nfm) == nfv;                                                                      \
            c0 += d <= t0;                                                                               \
            c1 += d <= t1;                                                                               \
            c2 += d <= t2;                                                                               \
            c3 += d <= t3;                                                                               \
        }                                                                                                \
        ADD7(out, c0, c1, c2, c3, id, na, nb);                                                           \
    }

/* mask: bit i (little bit order) of out = "changed at tm" for element i */
#define DEF_MASK(NAME, T, DEC, REF)                                                                        \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict b, int64_t n,                      \
                               const double *restrict lut, double tm, uint8_t *restrict out) {           \
        (void)lut;                                                                                       \
        const int64_t full = n >> 3;                                                                     \
        for (int64_t j = 0; j < full; j++) {                                                             \
            unsigned byte = 0;                                                                           \
            for (int t = 0; t < 8; t++) {                                                                \
                const int64_t i = (j << 3) + t;                                                          \
                const T x = a[i], y = b[i];                                                              \
                double d = DIFF(REF, DEC(x), DEC(y));                                                    \
                d = x == y ? 0.0 : d;                                                                    \
                byte |= (unsigned)!(d <= tm) << t;                                                       \
            }                                                                                            \
            out[j] = (uint8_t)byte;                                                                      \
        }                                                                                                \
        if (n & 7) {                                                                                     \
            unsigned byte = 0;                                                                           \
            for (int t = 0; t < (int)(n & 7); t++) {                                                     \
                const int64_t i = (full << 3) + t;                                                       \
                const T x = a[i], y = b[i];                                                              \
                double d = DIFF(REF, DEC(x), DEC(y));                                                    \
                d = x == y ? 0.0 : d;                                                                    \
                byte |= (unsigned)!(d <= tm) << t;                                                       \
            }                                                                                            \
            out[full] = (uint8_t)byte;                                                                   \
        }                                                                                                \
    }

/* ------------------------------------------------------------------------------------------------------
 * series step (see series_kernels._loop_nb): a = INIT, p = previous checkpoint, x = this one. The state
 * word per element keeps bit 0 "in the final subnetwork", bit 1 "bits differ in the final checkpoint",
 * bit 2 "ever changed", bit 3 "bits ever differed". out[0..7] += the eight per-step counts.
 */
#define DEF_STEP(NAME, T, DEC, REF)                                                                        \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict p, const T *restrict x, int64_t n, \
                               const double *restrict lut, double thr, uint16_t *restrict st,            \
                               int64_t *restrict out) {                                                  \
        (void)lut;                                                                                       \
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;                          \
        for (int64_t i = 0; i < n; i++) {                                                                \
            const T ai = a[i], pi = p[i], xi = x[i];                                                     \
            const double di = DIFF(REF, DEC(ai), DEC(xi));                                               \
            const double dp = DIFF(REF, DEC(pi), DEC(xi));                                               \
            const uint16_t ii = ai == xi, ip = pi == xi;                                                 \
            const uint16_t ci = (uint16_t)(!(di <= thr)) & (uint16_t)(1 - ii);                           \
            const uint16_t cp = (uint16_t)(!(dp <= thr)) & (uint16_t)(1 - ip);                           \
            uint16_t s = st[i];                                                                          \
            const uint16_t nf = (uint16_t)(1 - (s & 1));                                                 \
            s = (uint16_t)(s | (ci << 2) | ((1 - ii) << 3));                                             \
            st[i] = s;                                                                                   \
            c0 += ci;                                                                                    \
            c1 += ii;                                                                                    \
            c2 += cp;                                                                                    \
            c3 += ip;                                                                                    \
            c4 += ci & nf;                                                                               \
            c5 += cp & nf;                                                                               \
            c6 += (s >> 2) & 1;                                                                          \
            c7 += (s >> 3) & 1;                                                                          \
        }                                                                                                \
        ADD8(out, c0, c1, c2, c3, c4, c5, c6, c7);                                                       \
    }

#define DEF_ALL(SUFFIX, T, DEC)                                                                            \
    DEF_COUNT4(count4_##SUFFIX##_x, T, DEC, 0)                                                           \
    DEF_COUNT4(count4_##SUFFIX##_r, T, DEC, 1)                                                           \
    DEF_MASK(mask_##SUFFIX##_x, T, DEC, 0)                                                               \
    DEF_MASK(mask_##SUFFIX##_r, T, DEC, 1)                                                               \
    DEF_STEP(step_##SUFFIX##_x, T, DEC, 0)                                                               \
    DEF_STEP(step_##SUFFIX##_r, T, DEC, 1)

DEF_ALL(bf16, uint16_t, DEC_BF16)
DEF_ALL(lut16, uint16_t, DEC_LUT)
DEF_ALL(lut8, uint8_t, DEC_LUT)
DEF_ALL(f32, uint32_t, DEC_F32)
/* fp64 has no reference variant: torch computes an fp64 delta in fp64 (the caller never asks for one) */
DEF_COUNT4(count4_f64_x, uint64_t, DEC_F64, 0)
DEF_MASK(mask_f64_x, uint64_t, DEC_F64, 0)
DEF_STEP(step_f64_x, uint64_t, DEC_F64, 0)

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

#define DEF_COUNT4F(NAME, T, DEC32, SLOW)                                                                 \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict b, int64_t n,                      \
                               const float *restrict lut32, const double *restrict lut,                  \
                               const float *restrict le, const float *restrict amb,                      \
                               const double *restrict t, T nfm, T nfv, int64_t *restrict out) {          \
        (void)lut32;                                                                                     \
        const float l0 = le[0], l1 = le[1], l2 = le[2], l3 = le[3];                                      \
        const float m0 = amb[0], m1 = amb[1], m2 = amb[2], m3 = amb[3];                                  \
        for (int64_t s = 0; s < n; s += BLK) {                                                           \
            const int32_t m = (int32_t)(n - s < BLK ? n - s : BLK);                                      \
            const T *restrict x_ = a + s, *restrict y_ = b + s;                                          \
            int32_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, id = 0, na = 0, nb = 0, und = 0;                     \
            for (int32_t i = 0; i < m; i++) {                                                            \
                const T x = x_[i], y = y_[i];                                                            \
                const int32_t eq = x == y;                                                               \
                float d = fabsf(DEC32(y) - DEC32(x));                                                    \
                d = eq ? -1.0f : d;                                                                      \
                id += eq;                                                                                \
                na += (x & nfm) == nfv;                                                                  \
                nb += (y & nfm) == nfv;                                                                  \
                c0 += d <= l0;                                                                           \
                c1 += d <= l1;                                                                           \
                c2 += d <= l2;                                                                           \
                c3 += d <= l3;                                                                           \
                und += (d == m0) | (d == m1) | (d == m2) | (d == m3);                                    \
            }                                                                                            \
            if (und) {                                                                                   \
                SLOW(x_, y_, m, lut, t, nfm, nfv, out);                                                  \
                continue;                                                                                \
            }                                                                                            \
            ADD7(out, c0, c1, c2, c3, id, na, nb);                                                       \
        }                                                                                                \
    }

#define DEF_MASKF(NAME, T, DEC32, SLOW)                                                                   \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict b, int64_t n,                      \
                               const float *restrict lut32, const double *restrict lut, float le,        \
                               float amb, double tm, uint8_t *restrict out) {                            \
        (void)lut32;                                                                                     \
        for (int64_t s = 0; s < n; s += BLK) {                                                           \
            const int32_t m = (int32_t)(n - s < BLK ? n - s : BLK);                                      \
            const T *restrict x_ = a + s, *restrict y_ = b + s;                                          \
            uint8_t *restrict o_ = out + (s >> 3);                                                       \
            int32_t und = 0;                                                                             \
            const int32_t full = m >> 3;                                                                 \
            for (int32_t j = 0; j < full; j++) {                                                         \
                unsigned byte = 0;                                                                       \
                for (int t = 0; t < 8; t++) {                                                            \
                    const T x = x_[8 * j + t], y = y_[8 * j + t];                                        \
                    float d = fabsf(DEC32(y) - DEC32(x));                                                \
                    d = x == y ? -1.0f : d;                                                              \
                    und += d == amb;                                                                     \
                    byte |= (unsigned)!(d <= le) << t;                                                   \
                }                                                                                        \
                o_[j] = (uint8_t)byte;                                                                   \
            }                                                                                            \
            if (m & 7) {                                                                                 \
                unsigned byte = 0;                                                                       \
                for (int t = 0; t < (m & 7); t++) {                                                      \
                    const T x = x_[8 * full + t], y = y_[8 * full + t];                                  \
                    float d = fabsf(DEC32(y) - DEC32(x));                                                \
                    d = x == y ? -1.0f : d;                                                              \
                    und += d == amb;                                                                     \
                    byte |= (unsigned)!(d <= le) << t;                                                   \
                }                                                                                        \
                o_[full] = (uint8_t)byte;                                                                \
            }                                                                                            \
            if (und) SLOW(x_, y_, m, lut, tm, o_);                                                       \
        }                                                                                                \
    }

/* MODE 0: any step. MODE 1: p is INIT (the final pass and step 1), so the two differences are one.
 * MODE 2: x is the final checkpoint, whose "changed vs INIT" and "bits differ" are already state bits 0
 * and 1, so only the difference to p is taken. (ci + nf) >> 1 is ci & nf: written so, GCC 12 vectorises
 * the loop. */
#define DEF_STEPF(NAME, T, DEC32, SLOW, MODE)                                                             \
    SS_CLONES static void NAME(const T *restrict a, const T *restrict p, const T *restrict x, int64_t n, \
                               const float *restrict lut32, const double *restrict lut, float le,        \
                               float amb, double thr, uint16_t *restrict st, int64_t *restrict out) {    \
        (void)lut32;                                                                                     \
        uint16_t tmp[BLK];                                                                               \
        for (int64_t s = 0; s < n; s += BLK) {                                                           \
            const int32_t m = (int32_t)(n - s < BLK ? n - s : BLK);                                      \
            const T *restrict a_ = a + s, *restrict p_ = p + s, *restrict x_ = x + s;                    \
            uint16_t *restrict s_ = st + s;                                                              \
            int32_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0, und = 0;             \
            for (int32_t i = 0; i < m; i++) {                                                            \
                const T xi = x_[i];                                                                      \
                const float fx = DEC32(xi);                                                              \
                int32_t v = s_[i];                                                                       \
                int32_t ii, ci, ip, cp;                                                                  \
                if (MODE == 2) {                                                                         \
                    ci = v & 1;                                                                          \
                    ii = 1 - ((v >> 1) & 1);                                                             \
                } else {                                                                                 \
                    const T ai = a_[i];                                                                  \
                    ii = ai == xi;                                                                       \
                    float di = fabsf(fx - DEC32(ai));                                                    \
                    di = ii ? -1.0f : di;                                                                \
                    und += di == amb;                                                                    \
                    ci = !(di <= le);                                                                    \
                }                                                                                        \
                if (MODE == 1) {                                                                         \
                    ip = ii;                                                                             \
                    cp = ci;                                                                             \
                } else {                                                                                 \
                    const T pi = p_[i];                                                                  \
                    ip = pi == xi;                                                                       \
                    float dp = fabsf(fx - DEC32(pi));                                                    \
                    dp = ip ? -1.0f : dp;                                                                \
                    und += dp == amb;                                                                    \
                    cp = !(dp <= le);                                                                    \
                }                                                                                        \
                const int32_t nf = 1 - (v & 1);                                                          \
                v = v | (ci << 2) | ((1 - ii) << 3);                                                     \
                tmp[i] = (uint16_t)v;                                                                    \
                c0 += ci;                                                                                \
                c1 += ii;                                                                                \
                c2 += cp;                                                                                \
                c3 += ip;                                                                                \
                c4 += (ci + nf) >> 1;                                                                    \
                c5 += (cp + nf) >> 1;                                                                    \
                c6 += (v >> 2) & 1;                                                                      \
                c7 += (v >> 3) & 1;                                                                      \
            }                                                                                            \
            if (und) {                                                                                   \
                SLOW(a_, p_, x_, m, lut, thr, s_, out);                                                  \
                continue;                                                                                \
            }                                                                                            \
            memcpy(s_, tmp, (size_t)m * sizeof *tmp);                                                    \
            ADD8(out, c0, c1, c2, c3, c4, c5, c6, c7);                                                   \
        }                                                                                                \
    }

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

/* the float32 variants of one decoding; SLOW names the float64 variants they fall back on */
#define DEF_FAST(SUFFIX, T, DEC32, SLOW)                                                                   \
    DEF_COUNT4F(count4f_##SUFFIX, T, DEC32, count4_##SLOW##_x)                                            \
    DEF_MASKF(maskf_##SUFFIX, T, DEC32, mask_##SLOW##_x)                                                  \
    DEF_STEPF(stepf_##SUFFIX, T, DEC32, step_##SLOW##_x, 0)                                              \
    DEF_STEPF(stepf1_##SUFFIX, T, DEC32, step_##SLOW##_x, 1)                                             \
    DEF_STEPF(stepf2_##SUFFIX, T, DEC32, step_##SLOW##_x, 2)

DEF_FAST(bf16, uint16_t, DEC32_BF16, bf16)
DEF_FAST(lut16, uint16_t, DEC32_LUT, lut16)
DEF_FAST(lut8, uint8_t, DEC32_LUT, lut8)
DEF_FAST(f32, uint32_t, DEC32_F32, f32)
DEF_FAST(e4m3, uint8_t, DEC32_E4M3, lut8)
DEF_FAST(e5m2, uint8_t, DEC32_E5M2, lut8)

/* ------------------------------------------------------------------------------------------------------
 * exported entry points. ``fast`` selects the float32 variants (le/amb as described above; ignored for
 * fp64). Codes 5 and 6 (fp8 e4m3 / e5m2 by bit arithmetic) fall back on the 8-bit table variants (code
 * 2). Return 0, or -1 for an unknown code (the caller checks).
 */
#define SLOW_CODE(code) ((code) == 5 || (code) == 6 ? 2 : (code))

SS_EXPORT int ss_count4(const void *a, const void *b, int64_t n, int code, int ref, int fast,
                        const float *lut32, const double *lut, const float *le, const float *amb,
                        const double *thr4, uint64_t nfm, uint64_t nfv, int64_t *out) {
    const uint16_t m16 = (uint16_t)nfm, v16 = (uint16_t)nfv;
    const uint8_t m8 = (uint8_t)nfm, v8 = (uint8_t)nfv;
    const uint32_t m32 = (uint32_t)nfm, v32 = (uint32_t)nfv;
    if (fast && code != 4) {
        switch (code) {
        case 0: count4f_bf16(a, b, n, lut32, lut, le, amb, thr4, m16, v16, out); return 0;
        case 1: count4f_lut16(a, b, n, lut32, lut, le, amb, thr4, m16, v16, out); return 0;
        case 2: count4f_lut8(a, b, n, lut32, lut, le, amb, thr4, m8, v8, out); return 0;
        case 3: count4f_f32(a, b, n, lut32, lut, le, amb, thr4, m32, v32, out); return 0;
        case 5: count4f_e4m3(a, b, n, lut32, lut, le, amb, thr4, m8, v8, out); return 0;
        case 6: count4f_e5m2(a, b, n, lut32, lut, le, amb, thr4, m8, v8, out); return 0;
        default: return -1;
        }
    }
    switch (SLOW_CODE(code) * 2 + (ref ? 1 : 0)) {
    case 0: count4_bf16_x(a, b, n, lut, thr4, m16, v16, out); return 0;
    case 1: count4_bf16_r(a, b, n, lut, thr4, m16, v16, out); return 0;
    case 2: count4_lut16_x(a, b, n, lut, thr4, m16, v16, out); return 0;
    case 3: count4_lut16_r(a, b, n, lut, thr4, m16, v16, out); return 0;
    case 4: count4_lut8_x(a, b, n, lut, thr4, m8, v8, out); return 0;
    case 5: count4_lut8_r(a, b, n, lut, thr4, m8, v8, out); return 0;
    case 6: count4_f32_x(a, b, n, lut, thr4, m32, v32, out); return 0;
    case 7: count4_f32_r(a, b, n, lut, thr4, m32, v32, out); return 0;
    case 8: count4_f64_x(a, b, n, lut, thr4, nfm, nfv, out); return 0;
    default: return -1;
    }
}

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

SS_EXPORT int ss_mask(const void *a, const void *b, int64_t n, int code, int ref, int fast,
                      const float *lut32, const double *lut, float le, float amb, double tm, uint8_t *out) {
    if (fast && code != 4) DISPATCH_FAST(maskf, code, a, b, n, lut32, lut, le, amb, tm, out)
    DISPATCH(mask, ref, code, a, b, n, lut, tm, out)
}

/* one step of the series kernel; mode as in DEF_STEPF (the float64 variants handle every mode as 0) */
static int series_step(const void *a, const void *p, const void *x, int64_t n, int code, int ref, int fast,
                       int mode, const float *lut32, const double *lut, float le, float amb, double thr,
                       uint16_t *st, int64_t *out) {
    if (fast && code != 4) {
        if (mode == 1) DISPATCH_FAST(stepf1, code, a, p, x, n, lut32, lut, le, amb, thr, st, out)
        if (mode == 2) DISPATCH_FAST(stepf2, code, a, p, x, n, lut32, lut, le, amb, thr, st, out)
        DISPATCH_FAST(stepf, code, a, p, x, n, lut32, lut, le, amb, thr, st, out)
    }
    DISPATCH(step, ref, code, a, p, x, n, lut, thr, st, out)
}

/* ------------------------------------------------------------------------------------------------------
 * FP8 weights with block scales, compared by dequantized value (see fp8.py: _dq_nb and count_dequant_np).
 * One chunk: elements [start, start + n) of a [rows, cols] weight whose scales form a grid of
 * (b0 x b1) blocks (nbc = ceil(cols / b1) blocks per row of blocks); sa, sb hold the scales (float64).
 * Exact: value = fp8 value * scale in float64 (exact: 4 + 24 significant bits). Reference: the float32
 * product rounded to bf16 (torch's dequantisation to bf16), differences in float32.
 * out[0..3] += #(|d| <= t_k); out[4] += identical values; out[5], out[6] += non-finite base / target.
 */
static inline uint32_t bf16_rne(uint32_t u) {
    const uint32_t rne = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rne;
}

#define DEF_DQ(SUFFIX, DEC32)                                                                              \
    SS_CLONES static void dq_exact_##SUFFIX(const uint8_t *restrict a, const uint8_t *restrict b, int64_t n, \
                                            const float *restrict lut32, double s_a, double s_b,        \
                                            const double *restrict t, int64_t *restrict out) {          \
        (void)lut32;                                                                                     \
        const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];                                         \
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, id = 0, na = 0, nb = 0;                                  \
        for (int64_t i = 0; i < n; i++) {                                                                \
            const double va = (double)DEC32(a[i]) * s_a, vb = (double)DEC32(b[i]) * s_b;                \
            const int same = (va == vb) | ((va != va) & (vb != vb));                                     \
            double d = fabs(vb - va);                                                                    \
            d = same ? 0.0 : d;                                                                          \
            id += same;                                                                                  \
            na += (va - va) != 0.0; /* NaN or Inf */                                                     \
            nb += (vb - vb) != 0.0;                                                                      \
            c0 += d <= t0;                                                                               \
            c1 += d <= t1;                                                                               \
            c2 += d <= t2;                                                                               \
            c3 += d <= t3;                                                                               \
        }                                                                                                \
        ADD7(out, c0, c1, c2, c3, id, na, nb);                                                           \
    }                                                                                                    \
    SS_CLONES static void dq_ref_##SUFFIX(const uint8_t *restrict a, const uint8_t *restrict b, int64_t n,  \
                                          const float *restrict lut32, float f_a, float f_b,            \
                                          const double *restrict t, int64_t *restrict out) {            \
        (void)lut32;                                                                                     \
        const double t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3];                                         \
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, id = 0, na = 0, nb = 0;                                  \
        for (int64_t i = 0; i < n; i++) {                                                                \
            const uint32_t ha = bf16_rne(f32_u32(DEC32(a[i]) * f_a));                                    \
            const uint32_t hb = bf16_rne(f32_u32(DEC32(b[i]) * f_b));                                    \
            const int same = ha == hb;                                                                   \
            double d = (double)fabsf(u32_f32(hb << 16) - u32_f32(ha << 16));                             \
            d = same ? 0.0 : d;                                                                          \
            id += same;                                                                                  \
            na += (ha & 0x7F80u) == 0x7F80u;                                                             \
            nb += (hb & 0x7F80u) == 0x7F80u;                                                             \
            c0 += d <= t0;                                                                               \
            c1 += d <= t1;                                                                               \
            c2 += d <= t2;                                                                               \
            c3 += d <= t3;                                                                               \
        }                                                                                                \
        ADD7(out, c0, c1, c2, c3, id, na, nb);                                                           \
    }

DEF_DQ(lut, DEC32_LUT)
DEF_DQ(e4m3, DEC32_E4M3)
DEF_DQ(e5m2, DEC32_E5M2)

SS_EXPORT int ss_fp8_dequant(const uint8_t *a, const uint8_t *b, int64_t n, int code, const float *lut32,
                             const double *sa, const double *sb, int64_t start, int64_t cols, int64_t b0,
                             int64_t b1, int ref, const double *thr4, int64_t *out) {
    if (cols <= 0 || b0 <= 0 || b1 <= 0 || start < 0 || (code != 2 && code != 5 && code != 6)) return -1;
    const int64_t nbc = (cols + b1 - 1) / b1;
    int64_t i = 0, r = start / cols, c = start - (start / cols) * cols;
    while (i < n) {
        const int64_t end_c = cols < c + (n - i) ? cols : c + (n - i);
        const int64_t rb = (r / b0) * nbc;
        while (c < end_c) {
            const int64_t cb = c / b1;
            const int64_t seg = end_c < (cb + 1) * b1 ? end_c : (cb + 1) * b1;
            const int64_t j = i + seg - c;
            const double s_a = sa[rb + cb], s_b = sb[rb + cb];
            if (ref) {
                const float f_a = (float)s_a, f_b = (float)s_b;
                if (code == 5) dq_ref_e4m3(a + i, b + i, j - i, lut32, f_a, f_b, thr4, out);
                else if (code == 6) dq_ref_e5m2(a + i, b + i, j - i, lut32, f_a, f_b, thr4, out);
                else dq_ref_lut(a + i, b + i, j - i, lut32, f_a, f_b, thr4, out);
            } else {
                if (code == 5) dq_exact_e4m3(a + i, b + i, j - i, lut32, s_a, s_b, thr4, out);
                else if (code == 6) dq_exact_e5m2(a + i, b + i, j - i, lut32, s_a, s_b, thr4, out);
                else dq_exact_lut(a + i, b + i, j - i, lut32, s_a, s_b, thr4, out);
            }
            i = j;
            c = seg;
        }
        r += 1;
        c = 0;
    }
    return 0;
}

/* bumped whenever an exported signature changes; native.py refuses a library built from other sources */
SS_EXPORT int ss_abi_version(void) { return 7; }

/* split counts of a finished state array: final, final bits, ever changed or final, bits ever differed or
 * final bits */
SS_CLONES static void series_split(const uint16_t *restrict st, int64_t n, int64_t *restrict out) {
    for (int64_t s = 0; s < n; s += BLK) {
        const int32_t m = (int32_t)(n - s < BLK ? n - s : BLK);
        int32_t f = 0, fb = 0, e = 0, eb = 0;
        for (int32_t i = 0; i < m; i++) {
            const int32_t v = st[s + i];
            const int32_t u = (v >> 2) | v;
            f += v & 1;
            fb += (v >> 1) & 1;
            e += u & 1;
            eb += (u >> 1) & 1;
        }
        out[0] += f;
        out[1] += fb;
        out[2] += e;
        out[3] += eb;
    }
}

/* 1: run the AVX-512 kernels the CPU can run (native.py's default), 0: the plain C loops only. Returns
 * ss_simd_level: 0 none, 1 the series kernel, 2 the delta gather as well (it needs VBMI2). */
SS_EXPORT int ss_set_avx512(int on) {
    ss_simd_level = on ? ss_simd_detect() : 0;
    return ss_simd_level;
}

/* A whole series chunk, block by block so that a block of every row and its state stay in L1 across the
 * steps: rows[0] is INIT, rows[1..nsteps] the checkpoints, rows[fin] the final one (all of one dtype, n
 * elements). out (nsteps x 8) and split4 get the counts of series_kernels.series_chunk. Full bf16
 * blocks go to the AVX-512 kernel when it is in use (up to 1024 steps). */
SS_EXPORT int ss_series_chunk(const void *const *rows, int nsteps, int fin, int64_t n, int code, int ref,
                              int fast, const float *lut32, const double *lut, float le, float amb,
                              double thr, int64_t *out, int64_t *split4) {
    static const int64_t width[] = {2, 2, 1, 4, 8, 1, 1};
    if (code < 0 || code > 6 || nsteps < 1 || fin < 1) return -1;
    const int64_t w = width[code];
    uint16_t st[BLK];
    int64_t scratch[8];
    const int simd = ss_simd_level >= 1 && fast && code == 0 && nsteps <= 1024 && fin <= 1024;
    const uint16_t *brows[1025];
    int64_t counts[8 * 1024];
    for (int64_t s = 0; s < n; s += BLK) {
        const int64_t m = n - s < BLK ? n - s : BLK;
#define ROW(r) ((const void *)((const char *)rows[r] + s * w))
        if (simd && m == BLK) {
            const int top = nsteps > fin ? nsteps : fin;
            for (int r = 0; r <= top; r++) brows[r] = (const uint16_t *)ROW(r);
            if (ss_series_block_bf16(brows, nsteps, fin, le, amb, counts, out, split4) == 0) continue;
        }
        memset(st, 0, sizeof st);
        /* the final checkpoint: "changed" lands in bit 2 and "bits differ" in bit 3; moved to bits 0, 1 */
        series_step(ROW(0), ROW(0), ROW(fin), m, code, ref, fast, 1, lut32, lut, le, amb, thr, st, scratch);
        for (int64_t i = 0; i < m; i++) st[i] = (uint16_t)(st[i] >> 2);
        for (int k = 1; k <= nsteps; k++) {
            const int mode = k == 1 ? 1 : k == fin ? 2 : 0;
            series_step(ROW(0), ROW(k - 1), ROW(k), m, code, ref, fast, mode, lut32, lut, le, amb, thr, st,
                        out + 8 * (k - 1));
        }
        series_split(st, m, split4);
#undef ROW
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------------
 * the module itself has no Python functions: native.py loads this file with ctypes */
static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                                           "C kernels, called through ctypes by subnetscope.native.", -1,
                                           NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
