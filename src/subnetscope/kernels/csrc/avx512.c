/*
 * Hand-vectorised AVX-512 variants of three hot loops, used when the CPU has them (ss_simd_detect) and
 * native.set_avx512 / SUBNETSCOPE_NO_AVX512 do not turn them off; the plain C loops run otherwise, and the
 * tests check both against numpy:
 * - the series kernel for bf16 (ss_series_chunk in series.c calls it for every full block, and falls back
 *   on the plain loops for a block this kernel cannot decide);
 * - delta export's gather and apply's bitmap scatter (ss_diff_pack, ss_scatter_bitmap in delta.c;
 *   these need VBMI2).
 *
 * Why intrinsics: GCC vectorises the plain series loop with a uint16 state word per element and eight
 * vector counters (0.67-0.73 ns per element and step in cache); here the state is four bit planes (one bit
 * per element) and the counts are popcounts of the comparison masks (0.24-0.30 ns). Neither GCC nor numba
 * turns a gather or a scatter into VPCOMPRESS / VPEXPAND (6x and 13x faster at 20 % density).
 *
 * In the series kernel a zmm register holds 32 bf16 values. Seen as 16 uint32 lanes, lane j holds
 * elements 2j (low half) and 2j + 1 (high half): x << 16 is the float32 of the even elements and
 * x & 0xFFFF0000 that of the odd ones, two instructions per register and no shuffles. The masks of a
 * 32-element group are then ordered "even lanes, then odd lanes", the same for every row, so the planes of
 * all steps line up.
 *
 * It decides exactly as the float32 loops of compare.c and series.c: an element changed when bits differ and
 * !(d <= le), where d = |x - a| in float32; a block where some d equals amb (the float32 tolerance itself,
 * undecided in float32) is left to the caller, which recounts it in float64.
 */
#include "native.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,popcnt")))
#define AVX512_VBMI2 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vbmi2,popcnt")))

int ss_simd_level = 0;

int ss_simd_detect(void) {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq")))
        return 0;
    return __builtin_cpu_supports("avx512vbmi2") ? 2 : 1;
}

/* the even and odd float32 views of 32 bf16 values */
#define LOAD(ptr, E, O)                                                                                    \
    do {                                                                                                 \
        const __m512i v_ = _mm512_loadu_si512((const void *)(ptr));                                      \
        E = _mm512_slli_epi32(v_, 16);                                                                   \
        O = _mm512_and_si512(v_, hi);                                                                    \
    } while (0)

#define INLINE static inline __attribute__((always_inline))

/* changed and "bits differ" masks of one 16-lane half; und collects the undecided lanes (only when ties,
 * a constant of each instantiation, says that a tie is possible at all) */
INLINE AVX512 __mmask16 half(__m512i a, __m512i x, __m512 le, __m512 amb, __mmask16 *differ,
                             __mmask16 *und, const int ties) {
    const __mmask16 nd = _mm512_cmpneq_epi32_mask(a, x);
    const __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_castsi512_ps(x), _mm512_castsi512_ps(a)));
    if (ties) *und = _kor_mask16(*und, _mm512_mask_cmp_ps_mask(nd, d, amb, _CMP_EQ_OQ));
    *differ = nd;
    return _mm512_mask_cmp_ps_mask(nd, d, le, _CMP_NLE_UQ);
}

/* changed and "bits differ" masks of 64 elements (two registers of each row), bit i of a 32-bit half being
 * element 2i (i < 16) or 2(i - 16) + 1 of that half's 32 elements */
INLINE AVX512 uint64_t cmp64(const uint16_t *a, const uint16_t *x, __m512 le, __m512 amb, uint64_t *differ,
                             __mmask16 *und, const int ties) {
    const __m512i hi = _mm512_set1_epi32((int)0xFFFF0000u);
    __m512i ae, ao, xe, xo;
    __mmask16 c[4], d[4];
    for (int h = 0; h < 2; h++) {
        LOAD(a + 32 * h, ae, ao);
        LOAD(x + 32 * h, xe, xo);
        c[2 * h] = half(ae, xe, le, amb, &d[2 * h], und, ties);
        c[2 * h + 1] = half(ao, xo, le, amb, &d[2 * h + 1], und, ties);
    }
    const __mmask32 c0 = _mm512_kunpackw(c[1], c[0]), c1 = _mm512_kunpackw(c[3], c[2]);
    const __mmask32 d0 = _mm512_kunpackw(d[1], d[0]), d1 = _mm512_kunpackw(d[3], d[2]);
    *differ = _cvtmask64_u64(_mm512_kunpackd(d1, d0));
    return _cvtmask64_u64(_mm512_kunpackd(c1, c0));
}

#define WORDS (SS_BLK / 64)

int ss_series_block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                         int64_t *counts, int64_t *out, int64_t *split4) AVX512;

/* One full block (SS_BLK elements at rows[r]); counts is scratch for nsteps x 8 counters. Adds to out and
 * split4 and returns 0, or returns 1 having added nothing when some difference is undecided in float32.
 * Instantiated twice: with the tie test, and without it for ambf NaN (reference semantics, or no float32
 * difference of two bf16 values can equal the threshold: native.bf16_ties_possible), which saves two of
 * the seven vector operations per comparison. */
INLINE AVX512 int block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                             int64_t *counts, int64_t *out, int64_t *split4, const int ties) {
    uint64_t F[WORDS], FB[WORDS], E[WORDS], EB[WORDS];
    const __m512 le = _mm512_set1_ps(lef), amb = _mm512_set1_ps(ambf);
    __mmask16 und = 0;
    const uint16_t *a = rows[0];
    for (int g = 0; g < WORDS; g++) {
        F[g] = cmp64(a + 64 * g, rows[fin] + 64 * g, le, amb, &FB[g], &und, ties);
        E[g] = 0;
        EB[g] = 0;
    }
    for (int k = 1; k <= nsteps; k++) {
        const uint16_t *p = rows[k - 1], *x = rows[k];
        int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0, c6 = 0, c7 = 0;
        for (int g = 0; g < WORDS; g++) {
            uint64_t ci, di, cp, dp; /* changed and bits differ, vs INIT and vs the previous checkpoint */
            if (k == fin) {
                ci = F[g];
                di = FB[g];
            } else {
                ci = cmp64(a + 64 * g, x + 64 * g, le, amb, &di, &und, ties);
            }
            if (k == 1) {
                cp = ci;
                dp = di;
            } else {
                cp = cmp64(p + 64 * g, x + 64 * g, le, amb, &dp, &und, ties);
            }
            const uint64_t nf = ~F[g];
            E[g] |= ci;
            EB[g] |= di;
            c0 += __builtin_popcountll(ci);
            c1 += __builtin_popcountll(di);
            c2 += __builtin_popcountll(cp);
            c3 += __builtin_popcountll(dp);
            c4 += __builtin_popcountll(ci & nf);
            c5 += __builtin_popcountll(cp & nf);
            c6 += __builtin_popcountll(E[g]);
            c7 += __builtin_popcountll(EB[g]);
        }
        int64_t *c = counts + 8 * (k - 1);
        c[0] = c0;
        c[1] = SS_BLK - c1; /* identical to INIT */
        c[2] = c2;
        c[3] = SS_BLK - c3; /* identical to the previous checkpoint */
        c[4] = c4;
        c[5] = c5;
        c[6] = c6;
        c[7] = c7;
    }
    if (und) return 1;
    for (int i = 0; i < 8 * nsteps; i++) out[i] += counts[i];
    for (int g = 0; g < WORDS; g++) {
        split4[0] += __builtin_popcountll(F[g]);
        split4[1] += __builtin_popcountll(FB[g]);
        split4[2] += __builtin_popcountll(E[g] | F[g]);
        split4[3] += __builtin_popcountll(EB[g] | FB[g]);
    }
    return 0;
}

int ss_series_block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                         int64_t *counts, int64_t *out, int64_t *split4) {
    if (ambf != ambf) return block_bf16(rows, nsteps, fin, lef, ambf, counts, out, split4, 0);
    return block_bf16(rows, nsteps, fin, lef, ambf, counts, out, split4, 1);
}

/* ------------------------------------------------------------------------------------------------------
 * delta export's gather (see diff_pack in delta.c): the bitmap of a != b, 8 elements per byte in
 * little bit order, and the values of b where they differ, in order; returns how many. The comparison
 * mask of a register is its bitmap as it stands, and VPCOMPRESS packs the values. values holds n elements:
 * a full register is stored at values + k with k <= i, so it never passes values + n. */
#define DEF_PACK(W, T, LANES, MASK, SUF)                                                                   \
    int64_t ss_diff_pack512_##W(const T *a, const T *b, int64_t n, uint8_t *bitmap, T *values)       \
        AVX512_VBMI2;                                                                                    \
    int64_t ss_diff_pack512_##W(const T *a, const T *b, int64_t n, uint8_t *bitmap, T *values) {     \
        int64_t k = 0, i = 0;                                                                            \
        for (; i + LANES <= n; i += LANES) {                                                             \
            const __m512i va = _mm512_loadu_si512((const void *)(a + i));                                \
            const __m512i vb = _mm512_loadu_si512((const void *)(b + i));                                \
            const MASK m = _mm512_cmpneq_##SUF##_mask(va, vb);                                           \
            memcpy(bitmap + i / 8, &m, LANES / 8);                                                       \
            _mm512_storeu_si512((void *)(values + k), _mm512_maskz_compress_##SUF(m, vb));               \
            k += __builtin_popcountll((uint64_t)m);                                                      \
        }                                                                                                \
        if (i < n) {                                                                                     \
            const MASK t = (MASK)((1ull << (n - i)) - 1);                                                \
            const __m512i va = _mm512_maskz_loadu_##SUF(t, (const void *)(a + i));                      \
            const __m512i vb = _mm512_maskz_loadu_##SUF(t, (const void *)(b + i));                      \
            const MASK m = _mm512_mask_cmpneq_##SUF##_mask(t, va, vb);                                   \
            memcpy(bitmap + i / 8, &m, (size_t)(n - i + 7) / 8);                                         \
            const int c = __builtin_popcountll((uint64_t)m);                                             \
            _mm512_mask_storeu_##SUF((void *)(values + k), (MASK)((1ull << c) - 1),                       \
                                     _mm512_maskz_compress_##SUF(m, vb));                                \
            k += c;                                                                                      \
        }                                                                                                \
        return k;                                                                                        \
    }

SS_WIDTHS(DEF_PACK)

/* delta apply's scatter (see scatter_bitmap in delta.c): out[bit i set] = values, in order. The
 * same validation first (n elements, m values: the set bits below n must be at most m, and m > 0), the same
 * result (the number of set bits, or -1). Then VPEXPAND places the next values of a register at its set
 * lanes; masked loads never touch values past the ones a register uses, nor out past n. */
#define DEF_SCATTER(W, T, LANES, MASK, SUF)                                                                \
    int64_t ss_scatter_bitmap512_##W(T *out, int64_t n, const uint8_t *bitmap, const T *values,      \
                                          int64_t m) AVX512_VBMI2;                                         \
    int64_t ss_scatter_bitmap512_##W(T *out, int64_t n, const uint8_t *bitmap, const T *values,      \
                                          int64_t m) {                                                     \
        if (m == 0) return -1;                                                                           \
        const int64_t full = n / 64, nbytes = (n + 7) / 8;                                               \
        int64_t k = 0;                                                                                   \
        for (int64_t j = 0; j < full; j++) {                                                             \
            uint64_t x;                                                                                  \
            memcpy(&x, bitmap + 8 * j, 8);                                                               \
            k += __builtin_popcountll(x);                                                                \
        }                                                                                                \
        for (int64_t j = 8 * full; j < nbytes; j++) {                                                    \
            const int64_t left = n - 8 * j;                                                              \
            k += __builtin_popcount(bitmap[j] & (left >= 8 ? 0xFFu : (1u << left) - 1u));                \
        }                                                                                                \
        if (k > m) return -1;                                                                            \
        int64_t w = 0, i = 0;                                                                            \
        for (; i + LANES <= n; i += LANES) {                                                             \
            MASK b;                                                                                      \
            memcpy(&b, bitmap + i / 8, LANES / 8);                                                       \
            if (!b) continue;                                                                            \
            const int c = __builtin_popcountll((uint64_t)b);                                             \
            const __m512i v = _mm512_maskz_loadu_##SUF((MASK)((2ull << (c - 1)) - 1), values + w);         \
            const __m512i o = _mm512_loadu_si512((const void *)(out + i));                               \
            _mm512_storeu_si512((void *)(out + i), _mm512_mask_expand_##SUF(o, b, v));                   \
            w += c;                                                                                      \
        }                                                                                                \
        if (i < n) {                                                                                     \
            const MASK t = (MASK)((1ull << (n - i)) - 1);                                                \
            MASK b = 0;                                                                                  \
            memcpy(&b, bitmap + i / 8, (size_t)(n - i + 7) / 8);                                         \
            b &= t;                                                                                      \
            const int c = __builtin_popcountll((uint64_t)b);                                             \
            if (c) {                                                                                     \
                const __m512i v = _mm512_maskz_loadu_##SUF((MASK)((2ull << (c - 1)) - 1), values + w);     \
                const __m512i o = _mm512_maskz_loadu_##SUF(t, out + i);                                  \
                _mm512_mask_storeu_##SUF(out + i, t, _mm512_mask_expand_##SUF(o, b, v));                 \
            }                                                                                            \
        }                                                                                                \
        return k;                                                                                        \
    }

SS_WIDTHS(DEF_SCATTER)

#else /* no AVX-512 kernel on this compiler or architecture */

int ss_simd_level = 0;

int ss_simd_detect(void) { return 0; }

int ss_series_block_bf16(const uint16_t *const *rows, int nsteps, int fin, float lef, float ambf,
                         int64_t *counts, int64_t *out, int64_t *split4) {
    (void)rows, (void)nsteps, (void)fin, (void)lef, (void)ambf, (void)counts, (void)out, (void)split4;
    return 1;
}

#define DEF_STUBS(W, T, LANES, MASK, SUF)                                                                  \
    int64_t ss_diff_pack512_##W(const T *a, const T *b, int64_t n, uint8_t *bitmap, T *values) {         \
        (void)a, (void)b, (void)n, (void)bitmap, (void)values;                                           \
        return -1;                                                                                       \
    }                                                                                                    \
    int64_t ss_scatter_bitmap512_##W(T *out, int64_t n, const uint8_t *bitmap, const T *values,         \
                                     int64_t m) {                                                        \
        (void)out, (void)n, (void)bitmap, (void)values, (void)m;                                         \
        return -1;                                                                                       \
    }
SS_WIDTHS(DEF_STUBS)

#endif
