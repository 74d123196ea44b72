/* FP8 weights with block scales compared by dequantized value: the C version of kernels/fp8.py. */
#include "decode.h"

/*
 * FP8 weights with block scales, compared by dequantized value (see kernels/fp8.py: _dq_nb and count_dequant_np).
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
