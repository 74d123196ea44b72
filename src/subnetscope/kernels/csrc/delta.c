/*
 * Native (C) versions of the delta loops of kernels/delta.py: gather the changed values on export, scatter
 * them on apply. Same results as the numba and numpy versions (tested against both and a brute-force
 * oracle). The scatter loops validate their input (positions in range, value counts, varint lengths) and
 * return a negative error code for a damaged delta, so a bad file is an error, never a write out of bounds.
 */
#include "native.h"

#define MAX_VARINT 5 /* kernels/varint.py */
#define BLK 2048
#define ERR_VALUES (-1)
#define ERR_POSITION (-2)
#define ERR_VARINT (-3)

static inline int popcount8(unsigned x) {
    x = x - ((x >> 1) & 0x55u);
    x = (x & 0x33u) + ((x >> 2) & 0x33u);
    return (int)((x + (x >> 4)) & 0x0Fu);
}

static inline int lowest_bit8(unsigned x) { /* x != 0 */
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(x);
#else
    int t = 0;
    while (!(x & 1u)) {
        x >>= 1;
        t++;
    }
    return t;
#endif
}

/* bitmap byte j covers elements 8j..8j+7; bits at or beyond n do not count */
static inline unsigned tail_mask(int64_t j, int64_t n) {
    const int64_t left = n - 8 * j;
    return left >= 8 ? 0xFFu : (1u << left) - 1u;
}

#define DEF_DELTA(W, T)                                                                                    \
    /* bitmap of a != b; values[:k] = b where they differ, in order; returns k. The comparison fills a  \
     * block of 0/1 bytes (vectorised), eight of which a multiplication packs into one bitmap byte. */   \
    SS_CLONES static int64_t diff_pack_##W(const T *restrict a, const T *restrict b, int64_t n,          \
                                           uint8_t *restrict bitmap, T *restrict values) {               \
        uint8_t ne[BLK];                                                                                 \
        int64_t k = 0;                                                                                   \
        for (int64_t s = 0; s < n; s += BLK) {                                                           \
            const int64_t m = n - s < BLK ? n - s : BLK;                                                 \
            for (int64_t i = 0; i < m; i++) ne[i] = a[s + i] != b[s + i];                                \
            for (int64_t i = m; i < ((m + 7) & ~(int64_t)7); i++) ne[i] = 0;                             \
            int64_t kb = 0;                                                                              \
            uint8_t *restrict bm = bitmap + s / 8;                                                       \
            for (int64_t j = 0; j < (m + 7) / 8; j++) {                                                  \
                uint64_t x;                                                                              \
                memcpy(&x, ne + 8 * j, sizeof x);                                                        \
                const unsigned byte = (unsigned)((x * 0x0102040810204080ull) >> 56);                     \
                bm[j] = (uint8_t)byte;                                                                   \
                kb += popcount8(byte);                                                                   \
            }                                                                                            \
            T *restrict v = values + k;                                                                  \
            const T *restrict b_ = b + s;                                                                \
            int64_t w = 0;                                                                               \
            if (8 * kb < m) { /* rare changes: visit the set bits only */                               \
                for (int64_t j = 0; j < (m + 7) / 8; j++)                                                \
                    for (unsigned byte = bm[j]; byte; byte &= byte - 1u) v[w++] = b_[8 * j + lowest_bit8(byte)]; \
            } else { /* branch-free compaction */                                                       \
                for (int64_t i = 0; i < m; i++) {                                                        \
                    v[w] = b_[i];                                                                        \
                    w += ne[i];                                                                          \
                }                                                                                        \
            }                                                                                            \
            k += kb;                                                                                     \
        }                                                                                                \
        return k;                                                                                        \
    }                                                                                                    \
    /* out[bit i set] = values, in order: the number of set bits, or ERR_VALUES */                      \
    static int64_t scatter_bitmap_##W(T *restrict out, int64_t n, const uint8_t *restrict bitmap,       \
                                      const T *restrict values, int64_t m) {                             \
        if (m == 0) return ERR_VALUES;                                                                   \
        const int64_t nbytes = (n + 7) / 8;                                                              \
        int64_t k = 0;                                                                                   \
        for (int64_t j = 0; j < nbytes; j++) k += popcount8(bitmap[j] & tail_mask(j, n));                \
        if (k > m) return ERR_VALUES;                                                                    \
        int64_t w = 0;                                                                                   \
        for (int64_t j = 0; j < nbytes; j++) /* set bits only: no chain of loads through w */          \
            for (unsigned byte = bitmap[j] & tail_mask(j, n); byte; byte &= byte - 1u)                   \
                out[8 * j + lowest_bit8(byte)] = values[w++];                                            \
        return k;                                                                                        \
    }                                                                                                    \
    /* LEB128 gaps in buf: out[pos] = values, in order; values used, or ERR_POSITION / VALUES / VARINT */ \
    static int64_t scatter_varint_##W(T *restrict out, int64_t n, const uint8_t *restrict buf,          \
                                      int64_t nbuf, const T *restrict values, int64_t m) {               \
        int64_t prev = -1, k = 0, g = 0;                                                                 \
        int shift = 0;                                                                                   \
        for (int64_t j = 0; j < nbuf; j++) {                                                             \
            const int64_t byte = buf[j];                                                                 \
            g |= (byte & 0x7F) << shift;                                                                 \
            shift += 7;                                                                                  \
            if (byte & 0x80) {                                                                           \
                if (shift >= 7 * MAX_VARINT) return ERR_VARINT;                                          \
                continue;                                                                                \
            }                                                                                            \
            const int64_t p = prev + g + 1;                                                              \
            if (p >= n) return ERR_POSITION;                                                             \
            if (k >= m) return ERR_VALUES;                                                               \
            out[p] = values[k++];                                                                        \
            prev = p;                                                                                    \
            g = 0;                                                                                       \
            shift = 0;                                                                                   \
        }                                                                                                \
        return shift ? ERR_VARINT : k;                                                                   \
    }

DEF_DELTA(1, uint8_t)
DEF_DELTA(2, uint16_t)
DEF_DELTA(4, uint32_t)
DEF_DELTA(8, uint64_t)

#define BY_WIDTH(FN, width, ...)                                                                           \
    switch (width) {                                                                                     \
    case 1: return FN##_1(__VA_ARGS__);                                                                  \
    case 2: return FN##_2(__VA_ARGS__);                                                                  \
    case 4: return FN##_4(__VA_ARGS__);                                                                  \
    case 8: return FN##_8(__VA_ARGS__);                                                                  \
    default: return -100;                                                                                \
    }

SS_EXPORT int64_t ss_diff_pack(const void *a, const void *b, int64_t n, int width, uint8_t *bitmap,
                               void *values) {
    if (ss_simd_level >= 2) BY_WIDTH(ss_diff_pack512, width, a, b, n, bitmap, values)
    BY_WIDTH(diff_pack, width, a, b, n, bitmap, values)
}

SS_EXPORT int64_t ss_scatter_bitmap(void *out, int64_t n, int width, const uint8_t *bitmap,
                                    const void *values, int64_t m) {
    if (ss_simd_level >= 2) BY_WIDTH(ss_scatter_bitmap512, width, out, n, bitmap, values, m)
    BY_WIDTH(scatter_bitmap, width, out, n, bitmap, values, m)
}

SS_EXPORT int64_t ss_scatter_varint(void *out, int64_t n, int width, const uint8_t *buf, int64_t nbuf,
                                    const void *values, int64_t m) {
    BY_WIDTH(scatter_varint, width, out, n, buf, nbuf, values, m)
}

/* one LEB128 varint of g >= 0 at out + w; returns the new w */
static inline int64_t put_varint(uint8_t *out, int64_t w, int64_t g) {
    while (g >= 0x80) {
        out[w++] = (uint8_t)((g & 0x7F) | 0x80);
        g >>= 7;
    }
    out[w++] = (uint8_t)g;
    return w;
}

/* the LEB128 gaps (pos[i] - pos[i-1] - 1) of the set bits of bitmap below n into out (cap bytes): the
 * bytes written, or -1 when they would not fit. On little-endian hosts whole 64-bit words are walked bit by
 * bit (count trailing zeros), which skips empty bytes without a branch each; the rest byte by byte. */
SS_EXPORT int64_t ss_bitmap_varint(const uint8_t *bitmap, int64_t nbytes, int64_t n, uint8_t *out,
                                   int64_t cap) {
    int64_t prev = -1, w = 0, j = 0;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; j + 8 <= nbytes; j += 8) {
        uint64_t x;
        memcpy(&x, bitmap + j, sizeof x);
        for (; x; x &= x - 1u) {
            const int64_t i = 8 * j + __builtin_ctzll(x);
            if (i >= n) return w;
            if (w + MAX_VARINT > cap) return -1;
            w = put_varint(out, w, i - prev - 1);
            prev = i;
        }
    }
#endif
    for (; j < nbytes; j++) {
        for (unsigned byte = bitmap[j]; byte; byte &= byte - 1u) {
            const int64_t i = 8 * j + lowest_bit8(byte);
            if (i >= n) return w;
            if (w + MAX_VARINT > cap) return -1;
            w = put_varint(out, w, i - prev - 1);
            prev = i;
        }
    }
    return w;
}
