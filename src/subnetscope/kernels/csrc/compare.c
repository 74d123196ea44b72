/*
 * compare's fused per-chunk count (and its mask bits): the C versions of kernels/compare.py's numba and
 * numpy loops, bit for bit. Decoders and the float32 scheme are described in decode.h.
 */
#include "decode.h"

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


#define DEF_COMPARE(SUFFIX, T, DEC)                                                                    \
    DEF_COUNT4(count4_##SUFFIX##_x, T, DEC, 0)                                                         \
    DEF_COUNT4(count4_##SUFFIX##_r, T, DEC, 1)                                                         \
    DEF_MASK(mask_##SUFFIX##_x, T, DEC, 0)                                                             \
    DEF_MASK(mask_##SUFFIX##_r, T, DEC, 1)

DEF_COMPARE(bf16, uint16_t, DEC_BF16)
DEF_COMPARE(lut16, uint16_t, DEC_LUT)
DEF_COMPARE(lut8, uint8_t, DEC_LUT)
DEF_COMPARE(f32, uint32_t, DEC_F32)
/* fp64 has no reference variant: torch computes an fp64 delta in fp64 (the caller never asks for one) */
DEF_COUNT4(count4_f64_x, uint64_t, DEC_F64, 0)
DEF_MASK(mask_f64_x, uint64_t, DEC_F64, 0)

/* the float32 variants (see decode.h) */
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

/* the float32 variants of one decoding; SLOW names the float64 variants they fall back on */
#define DEF_COMPARE_FAST(SUFFIX, T, DEC32, SLOW)                                                       \
    DEF_COUNT4F(count4f_##SUFFIX, T, DEC32, count4_##SLOW##_x)                                         \
    DEF_MASKF(maskf_##SUFFIX, T, DEC32, mask_##SLOW##_x)

DEF_COMPARE_FAST(bf16, uint16_t, DEC32_BF16, bf16)
DEF_COMPARE_FAST(lut16, uint16_t, DEC32_LUT, lut16)
DEF_COMPARE_FAST(lut8, uint8_t, DEC32_LUT, lut8)
DEF_COMPARE_FAST(f32, uint32_t, DEC32_F32, f32)
DEF_COMPARE_FAST(e4m3, uint8_t, DEC32_E4M3, lut8)
DEF_COMPARE_FAST(e5m2, uint8_t, DEC32_E5M2, lut8)

/* exported entry points (see decode.h for fast, le, amb and the codes) */
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


SS_EXPORT int ss_mask(const void *a, const void *b, int64_t n, int code, int ref, int fast,
                      const float *lut32, const double *lut, float le, float amb, double tm, uint8_t *out) {
    if (fast && code != 4) DISPATCH_FAST(maskf, code, a, b, n, lut32, lut, le, amb, tm, out)
    DISPATCH(mask, ref, code, a, b, n, lut, tm, out)
}
