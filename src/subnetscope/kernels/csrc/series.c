/*
 * The series kernel: the C version of kernels/series.py's numba and numpy loops, bit for bit. One call
 * handles a whole chunk of INIT, K checkpoints and the final one, block by block; full bf16 blocks go to
 * the AVX-512 kernel of avx512.c when it is in use. Decoders and the float32 scheme are in decode.h.
 */
#include "decode.h"

/* ------------------------------------------------------------------------------------------------------
 * series step (see kernels/series.py: _loop_nb): a = INIT, p = previous checkpoint, x = this one. The state
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


#define DEF_SERIES(SUFFIX, T, DEC)                                                                     \
    DEF_STEP(step_##SUFFIX##_x, T, DEC, 0)                                                             \
    DEF_STEP(step_##SUFFIX##_r, T, DEC, 1)

DEF_SERIES(bf16, uint16_t, DEC_BF16)
DEF_SERIES(lut16, uint16_t, DEC_LUT)
DEF_SERIES(lut8, uint8_t, DEC_LUT)
DEF_SERIES(f32, uint32_t, DEC_F32)
/* fp64 has no reference variant: torch computes an fp64 delta in fp64 (the caller never asks for one) */
DEF_STEP(step_f64_x, uint64_t, DEC_F64, 0)

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


/* the float32 variants of one decoding; SLOW names the float64 variants they fall back on */
#define DEF_SERIES_FAST(SUFFIX, T, DEC32, SLOW)                                                        \
    DEF_STEPF(stepf_##SUFFIX, T, DEC32, step_##SLOW##_x, 0)                                            \
    DEF_STEPF(stepf1_##SUFFIX, T, DEC32, step_##SLOW##_x, 1)                                           \
    DEF_STEPF(stepf2_##SUFFIX, T, DEC32, step_##SLOW##_x, 2)

DEF_SERIES_FAST(bf16, uint16_t, DEC32_BF16, bf16)
DEF_SERIES_FAST(lut16, uint16_t, DEC32_LUT, lut16)
DEF_SERIES_FAST(lut8, uint8_t, DEC32_LUT, lut8)
DEF_SERIES_FAST(f32, uint32_t, DEC32_F32, f32)
DEF_SERIES_FAST(e4m3, uint8_t, DEC32_E4M3, lut8)
DEF_SERIES_FAST(e5m2, uint8_t, DEC32_E5M2, lut8)

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


/* A whole series chunk, block by block so that a block of every row and its state stay in L1 across the
 * steps: rows[0] is INIT, rows[1..nsteps] the checkpoints, rows[fin] the final one (all of one dtype, n
 * elements). out (nsteps x 8) and split4 get the counts of kernels/series.py: series_chunk. Full bf16
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
