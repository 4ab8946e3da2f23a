/* Fused CPU kernels of the segment lookup (taan_core/nn/_kernels.py compiles this file at first use
   with the system C compiler and calls it through ctypes).

   Forward, per element v of z with per-row task t:
       k = number of breakpoints (sorted hinges) <= v;  s = k + [v > 0]
       out = slope[t, s] * v + intercept[t, s];  segment = s;  row sums of v and v^2 (float64)
   Backward, per element: dz = g * slope[t, s]; per (t, s): sum g and sum g * v (float64).

   Two forward paths; taan_fwd_* returns which one ran, and the caller may forbid the first:
   - AVX-512 (compiled when the compiler targets it; float32 and bfloat16 inputs, M <= 94): the
     padded breakpoints and the task's tables sit in vector registers; the search is a
     branch-free binary search whose pivots come from in-register permutes (log2 of the padded
     size in steps, so the cost hardly moves with M), and the table lookups are permutes too.
     Gathers are avoided: on many x86 parts they cost tens of cycles.
   - Portable C for everything else: a vectorisable count of breakpoints <= v and gathers.
   Both count with <= (a hinge equal to v is inactive) and v > 0 (relu off at 0); NaN compares
   false everywhere, so NaN inputs give NaN outputs; a segment with slope exactly 0 gives its
   intercept, also at z = +-inf. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef uint16_t bf16_t;

static inline float bf16_load(bf16_t v) {
    uint32_t u = (uint32_t)v << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline bf16_t bf16_store(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;   /* NaN, as torch writes it */
    u += 0x7fffu + ((u >> 16) & 1u);                               /* round to nearest even */
    return (bf16_t)(u >> 16);
}
static inline float f32_load(float v) { return v; }
static inline float f32_store(float v) { return v; }
static inline double f64_load(double v) { return v; }
static inline double f64_store(double v) { return v; }

/* ---------------------------------------------------------------- AVX-512 forward (float tables) */
#ifdef __AVX512F__
#define TAAN_HAVE_AVX512 1

static inline __m512 v16_load_f32(const float *p) { return _mm512_loadu_ps(p); }
static inline void v16_store_f32(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
static inline __m512 v16_load_bf16(const bf16_t *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline void v16_store_bf16(bf16_t *p, __m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

/* The search is a binary search tree stored level by level: level l holds 2^l pivots,
   lv[l][node] = pad[node * 2^(LOGP-l) + 2^(LOGP-l-1) - 1], where pad is the sorted breakpoints
   followed by NaN (NaN <= v is false, so padding acts as +inf). Each level is one in-register
   permute of at most 64 entries, indexed by the lane's node; after LOGP levels the node is the
   number of breakpoints <= v. */
static inline __attribute__((always_inline)) __m512i avx_search(__m512 v, const __m512 *LV, const int LOGP) {
    __m512i node = _mm512_setzero_si512();
    const __m512i one = _mm512_set1_epi32(1);
    for (int l = 0; l < LOGP; l++) {
        const __m512 *t = LV + 4 * l;
        __m512 piv;
        if (l <= 4) piv = _mm512_permutexvar_ps(node, t[0]);
        else if (l == 5) piv = _mm512_permutex2var_ps(t[0], node, t[1]);
        else piv = _mm512_mask_mov_ps(_mm512_permutex2var_ps(t[0], node, t[1]),
                                      _mm512_cmpge_epi32_mask(node, _mm512_set1_epi32(32)),
                                      _mm512_permutex2var_ps(t[2], node, t[3]));
        node = _mm512_add_epi32(node, node);
        node = _mm512_mask_add_epi32(node, _mm512_cmp_ps_mask(piv, v, _CMP_LE_OQ), node, one);
    }
    return node;
}

/* table[s] for s < 32 * NC, the table held as NC register pairs */
static inline __attribute__((always_inline)) __m512 avx_table(const __m512 *tab, __m512i s, const int NC) {
    __m512 r = _mm512_permutex2var_ps(tab[0], s, tab[1]);
    for (int c = 1; c < NC; c++)
        r = _mm512_mask_mov_ps(r, _mm512_cmpge_epi32_mask(s, _mm512_set1_epi32(32 * c)),
                               _mm512_permutex2var_ps(tab[2 * c], s, tab[2 * c + 1]));
    return r;
}

#define DEFINE_AVX_ROWS(TAG, TIN)                                                                  \
static inline __attribute__((always_inline)) void avx_rows_##TAG(                                 \
        const TIN *z, const int64_t *task, int64_t n0, int64_t n1, int64_t D,                      \
        const float *pad, const int LOGP, const float *slope, const float *icpt, int64_t S,        \
        const int NC, TIN *out, uint8_t *seg, double *stats, int64_t M) {                          \
    __m512 LV[28];                                                                                 \
    for (int l = 0; l < LOGP; l++) {                                                               \
        int step = 1 << (LOGP - l);                                                                \
        float level[64];                                                                           \
        for (int c = 0; c < 64; c++) level[c] = c < (1 << l) ? pad[c * step + step / 2 - 1] : 0.0f; \
        for (int r = 0; r < 4; r++) LV[4 * l + r] = _mm512_loadu_ps(level + 16 * r);               \
    }                                                                                              \
    float sbuf[96], ibuf[96];                                                                      \
    __m512 ts[6], ti[6];                                                                           \
    for (int64_t n = n0; n < n1; n++) {                                                            \
        const float *sl = slope + task[n] * S, *ic = icpt + task[n] * S;                           \
        memset(sbuf, 0, sizeof sbuf); memset(ibuf, 0, sizeof ibuf);                                \
        memcpy(sbuf, sl, sizeof(float) * S); memcpy(ibuf, ic, sizeof(float) * S);                  \
        for (int i = 0; i < 2 * NC; i++) {                                                         \
            ts[i] = _mm512_loadu_ps(sbuf + 16 * i); ti[i] = _mm512_loadu_ps(ibuf + 16 * i);        \
        }                                                                                          \
        const TIN *zr = z + n * D; TIN *o = out + n * D; uint8_t *sg = seg + n * D;                \
        __m512d a1 = _mm512_setzero_pd(), b1 = a1, a2 = a1, b2 = a1;                               \
        int64_t j = 0;                                                                             \
        for (; j + 16 <= D; j += 16) {                                                             \
            __m512 v = v16_load_##TAG(zr + j);                                                     \
            __m512i s = avx_search(v, LV, LOGP);                                               \
            s = _mm512_mask_add_epi32(s, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ),  \
                                      s, _mm512_set1_epi32(1));                                    \
            __m512 a = avx_table(ts, s, NC), c = avx_table(ti, s, NC);                             \
            __m512 y = _mm512_fmadd_ps(a, v, c);                                                   \
            /* a flat segment gives its intercept even at z = +-inf (not 0 * inf = NaN) */          \
            y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_EQ_OQ), c);  \
            v16_store_##TAG(o + j, y);                                                             \
            _mm_storeu_si128((__m128i *)(sg + j), _mm512_cvtepi32_epi8(s));                        \
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));                               \
            __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))); \
            a1 = _mm512_add_pd(a1, lo); b1 = _mm512_add_pd(b1, hi);                                \
            a2 = _mm512_fmadd_pd(lo, lo, a2); b2 = _mm512_fmadd_pd(hi, hi, b2);                    \
        }                                                                                          \
        double s1 = _mm512_reduce_add_pd(_mm512_add_pd(a1, b1));                                   \
        double s2 = _mm512_reduce_add_pd(_mm512_add_pd(a2, b2));                                   \
        for (; j < D; j++) {                                                                       \
            float v = TAG##_load(zr[j]); int k = 0;                                                \
            for (int64_t i = 0; i < M; i++) k += pad[i] <= v;                                      \
            int s = k + (v > 0);                                                                   \
            o[j] = TAG##_store(sl[s] == 0 ? ic[s] : sl[s] * v + ic[s]); sg[j] = (uint8_t)s;       \
            s1 += (double)v; s2 += (double)v * (double)v;                                          \
        }                                                                                          \
        if (stats) { stats[2 * n] = s1; stats[2 * n + 1] = s2; }                                   \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static void avx_fwd_##TAG(const TIN *z, const int64_t *task, int64_t n0, int64_t n1, int64_t D,   \
        const float *pad, int logp, const float *slope, const float *icpt, int64_t S,              \
        TIN *out, uint8_t *seg, double *stats, int64_t M) {                                        \
    int nc = (int)((S + 31) / 32);                                                                 \
    /* constant search depth and table size, so that the compiler unrolls every loop above */ \
    if (nc == 1) switch (logp) {                                                               \
            case 0: avx_rows_##TAG(z, task, n0, n1, D, pad, 0, slope, icpt, S, 1, out, seg, stats, M); break; \
            case 1: avx_rows_##TAG(z, task, n0, n1, D, pad, 1, slope, icpt, S, 1, out, seg, stats, M); break; \
            case 2: avx_rows_##TAG(z, task, n0, n1, D, pad, 2, slope, icpt, S, 1, out, seg, stats, M); break; \
            case 3: avx_rows_##TAG(z, task, n0, n1, D, pad, 3, slope, icpt, S, 1, out, seg, stats, M); break; \
            case 4: avx_rows_##TAG(z, task, n0, n1, D, pad, 4, slope, icpt, S, 1, out, seg, stats, M); break; \
            default: avx_rows_##TAG(z, task, n0, n1, D, pad, 5, slope, icpt, S, 1, out, seg, stats, M); break; \
        }                                                                                          \
    else if (nc == 2) switch (logp) {                                                          \
            case 5: avx_rows_##TAG(z, task, n0, n1, D, pad, 5, slope, icpt, S, 2, out, seg, stats, M); break; \
            default: avx_rows_##TAG(z, task, n0, n1, D, pad, 6, slope, icpt, S, 2, out, seg, stats, M); break; \
        }                                                                                          \
    else if (nc == 3) switch (logp) {                                                          \
            case 6: avx_rows_##TAG(z, task, n0, n1, D, pad, 6, slope, icpt, S, 3, out, seg, stats, M); break; \
            default: avx_rows_##TAG(z, task, n0, n1, D, pad, 7, slope, icpt, S, 3, out, seg, stats, M); break; \
        }                                                                                          \
}

DEFINE_AVX_ROWS(f32, float)
DEFINE_AVX_ROWS(bf16, bf16_t)
#endif

/* ---------------------------------------------------------------- running statistics */

/* One exponential-moving-average step of a mean and an unbiased variance from count elements
   with sum s1 and sum of squares s2; absent tasks keep their values, and a single element
   moves the mean only. The same arithmetic as the layer's torch fallback. */
static void ema_step(float *mean, float *var, double count, double s1, double s2, double m) {
    double safe = count > 1.0 ? count : 1.0;
    double batch_mean = s1 / safe;
    double spread = s2 / safe - batch_mean * batch_mean;
    double batch_var = (spread > 0.0 ? spread : 0.0) * safe / (safe - 1.0 > 1.0 ? safe - 1.0 : 1.0);
    if (count > 0) *mean = (float)((1.0 - m) * (double)*mean + m * batch_mean);
    if (count > 1) *var = (float)((1.0 - m) * (double)*var + m * batch_var);
}

/* The running statistics (float32: mean and var (T), mean and var overall) from the row sums.
   Rows are visited in order, so the sums do not depend on threads. */
static void running_update(float *mean, float *var, float *mean_all, float *var_all, const double *stats,
                           const int64_t *task, int64_t N, int64_t D, int64_t T, double momentum) {
    double *acc = (double *)calloc((size_t)(3 * T), sizeof(double));
    if (!acc) return;
    for (int64_t n = 0; n < N; n++) {
        double *a = acc + 3 * task[n];
        a[0] += (double)D; a[1] += stats[2 * n]; a[2] += stats[2 * n + 1];
    }
    double all[3] = {0.0, 0.0, 0.0};
    for (int64_t t = 0; t < T; t++) {
        ema_step(mean + t, var + t, acc[3 * t], acc[3 * t + 1], acc[3 * t + 2], momentum);
        all[0] += acc[3 * t]; all[1] += acc[3 * t + 1]; all[2] += acc[3 * t + 2];
    }
    ema_step(mean_all, var_all, all[0], all[1], all[2], momentum);
    free(acc);
}

/* ---------------------------------------------------------------- tables and their gradients */

#define DEFINE_TABLES(TAG, TACC)                                                                   \
typedef struct { TACC v; int64_t i; } TAG##_keyed;                                                 \
static int TAG##_cmp(const void *pa, const void *pb) {                                             \
    const TAG##_keyed *a = (const TAG##_keyed *)pa, *b = (const TAG##_keyed *)pb;                  \
    int na = a->v != a->v, nb = b->v != b->v;               /* NaN sorts last, as in torch */      \
    if (na != nb) return na - nb;                                                                  \
    if (!na && a->v != b->v) return a->v < b->v ? -1 : 1;                                          \
    return (a->i > b->i) - (a->i < b->i);                                                          \
}                                                                                                  \
                                                                                                   \
/* Sorted hinges bp (M), their order, q = #{bp <= 0}, and the (T, M + 2) tables: segment s has     \
   k = s - [s > q] and slope = [s > q] - sum_{i >= k} alpha_sorted, intercept = sum_{i >= k}       \
   alpha_sorted * bp. tmp holds 2 (M + 1) values. Returns q. */                                    \
static int64_t TAG##_tables(const TACC *alpha, const TACC *hinges, int64_t T, int64_t M,           \
        TAG##_keyed *keys, TACC *bp, int64_t *order, TACC *slope, TACC *icpt, TACC *tmp) {         \
    int64_t S = M + 2, q = 0;                                                                      \
    for (int64_t i = 0; i < M; i++) { keys[i].v = hinges[i]; keys[i].i = i; }                      \
    qsort(keys, (size_t)M, sizeof(TAG##_keyed), TAG##_cmp);                                        \
    for (int64_t i = 0; i < M; i++) { bp[i] = keys[i].v; order[i] = keys[i].i; q += bp[i] <= 0; }  \
    TACC *sa = tmp, *sb = tmp + (M + 1);                     /* suffix sums, index k = 0..M */     \
    for (int64_t t = 0; t < T; t++) {                                                              \
        const TACC *a = alpha + t * M;                                                             \
        sa[M] = 0; sb[M] = 0;                                                                      \
        for (int64_t k = M - 1; k >= 0; k--) {                                                     \
            TACC ak = a[order[k]];                                                                 \
            sa[k] = sa[k + 1] + ak; sb[k] = sb[k + 1] + ak * bp[k];                                \
        }                                                                                          \
        for (int64_t s = 0; s < S; s++) {                                                          \
            int on = s > q; int64_t k = s - on;                                                    \
            slope[t * S + s] = (TACC)on - sa[k]; icpt[t * S + s] = sb[k];                          \
        }                                                                                          \
    }                                                                                              \
    return q;                                                                                      \
}                                                                                                  \
                                                                                                   \
/* Gradients of alpha (T, M) and hinges (M) from the float64 sums G1 = sum grad * z and            \
   G2 = sum grad per (task, segment): sorted hinge i is active on the prefix s <= i + [i >= q],    \
   so dalpha_i = bp_i * P2 - P1 and dhinges_i = sum_t alpha_i * P2 with P the prefix sums. */      \
static void TAG##_table_grads(const double *g1, const double *g2, const TACC *alpha,               \
        const TACC *bp, const int64_t *order, int64_t q, int64_t T, int64_t M, TACC *dalpha,       \
        TACC *dhinges, double *tmp) {                                                              \
    int64_t S = M + 2;                                                                             \
    double *p1 = tmp, *p2 = tmp + S, *dh = tmp + 2 * S;      /* prefix sums; dhinges sorted */     \
    for (int64_t i = 0; i < M; i++) dh[i] = 0;                                                     \
    for (int64_t t = 0; t < T; t++) {                                                              \
        double c1 = 0, c2 = 0;                                                                     \
        for (int64_t s = 0; s < S; s++) { c1 += g1[t * S + s]; c2 += g2[t * S + s]; p1[s] = c1; p2[s] = c2; }\
        for (int64_t i = 0; i < M; i++) {                                                          \
            int64_t last = i + (i >= q);                                                           \
            dalpha[t * M + order[i]] = (TACC)((double)bp[i] * p2[last] - p1[last]);                \
            dh[i] += (double)alpha[t * M + order[i]] * p2[last];                                   \
        }                                                                                          \
    }                                                                                              \
    for (int64_t i = 0; i < M; i++) dhinges[order[i]] = (TACC)dh[i];                               \
}                                                                                                  \

DEFINE_TABLES(f32, float)
DEFINE_TABLES(f64, double)

/* ---------------------------------------------------------------- portable forward and backward */

#define DEFINE_KERNELS(TAG, TIN, TACC, AVX_OK, TT)                                                 \
static void portable_rows_##TAG(const TIN *z, const int64_t *task, int64_t n0, int64_t n1,        \
        int64_t D, const TACC *bp, int64_t M, const TACC *slope, const TACC *icpt, int64_t S,      \
        TIN *out, uint8_t *seg8, int32_t *seg32, double *stats) {                                  \
    for (int64_t n = n0; n < n1; n++) {                                                            \
        const TACC *sl = slope + task[n] * S, *ic = icpt + task[n] * S;                            \
        const TIN *zr = z + n * D; TIN *o = out + n * D;                                           \
        double s1 = 0.0, s2 = 0.0;                                                                 \
        _Pragma("omp simd reduction(+:s1,s2)")                                                     \
        for (int64_t j = 0; j < D; j++) {                                                          \
            TACC v = TAG##_load(zr[j]); int k = 0;                                                 \
            for (int64_t i = 0; i < M; i++) k += bp[i] <= v;                                       \
            int s = k + (v > 0);                                                                   \
            o[j] = TAG##_store(sl[s] == 0 ? ic[s] : sl[s] * v + ic[s]);                           \
            if (seg8) seg8[n * D + j] = (uint8_t)s; else seg32[n * D + j] = s;                     \
            s1 += (double)v; s2 += (double)v * (double)v;                                          \
        }                                                                                          \
        if (stats) { stats[2 * n] = s1; stats[2 * n + 1] = s2; }                                   \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static void TAG##_fwd_block(const TIN *z, const int64_t *task, int64_t n0, int64_t n1, int64_t D,  \
        const TACC *bp, int64_t M, const float *pad, int logp, int use_avx, const TACC *slope,     \
        const TACC *icpt, int64_t S, TIN *out, uint8_t *seg8, int32_t *seg32, double *stats) {     \
    if (use_avx) AVX_CALL_##TAG(z, task, n0, n1, D, pad, logp, (const float *)slope,               \
                                (const float *)icpt, S, out, seg8, stats, M);                      \
    else portable_rows_##TAG(z, task, n0, n1, D, bp, M, slope, icpt, S, out, seg8, seg32, stats);  \
}                                                                                                  \
                                                                                                   \
/* Forward: builds the tables from alpha (T, M) and hinges (M) (tables in TACC), then one pass
   over z; with run_mean != NULL (needs stats) also updates the running statistics. allow_avx = 0 \
   forces the portable path. Returns 1 if the AVX-512 path ran, 0 for the portable one, -1 if out \
   of memory. */                                                                                  \
int taan_fwd_##TAG(const TIN *z, const int64_t *task, int64_t N, int64_t D, const TACC *alpha,     \
        const TACC *hinges, int64_t T, int64_t M, TIN *out, uint8_t *seg8, int32_t *seg32,         \
        double *stats, float *run_mean, float *run_var, float *run_mean_all, float *run_var_all,   \
        double momentum, int nthreads, int allow_avx) {                                            \
    int64_t S = M + 2;                                                                             \
    char *mem = (char *)malloc(sizeof(TT##_keyed) * (size_t)(M + 1) + sizeof(int64_t) * (size_t)(M + 1)\
                               + sizeof(TACC) * (size_t)(3 * M + 3 + 2 * T * S));                  \
    if (!mem) return -1;                                                                           \
    TT##_keyed *keys = (TT##_keyed *)mem;                                                          \
    int64_t *order = (int64_t *)(keys + M + 1);                                                    \
    TACC *bp = (TACC *)(order + M + 1), *tmp = bp + M + 1, *slope = tmp + 2 * (M + 1), *icpt = slope + T * S;\
    TT##_tables(alpha, hinges, T, M, keys, bp, order, slope, icpt, tmp);                           \
    int logp = 0; while ((1LL << logp) < M + 1) logp++;                                            \
    int use_avx = AVX_OK && allow_avx && seg8 != 0 && M <= 94;                                     \
    float pad[128];                                                                                \
    if (use_avx) for (int i = 0; i < 128; i++) pad[i] = i < M ? (float)bp[i] : __builtin_nanf(""); \
    /* one thread runs without an OpenMP region: resizing torch's team for a tiny input costs      \
       far more than the work, above all on a busy machine */                                      \
    if (nthreads <= 1) {                                                                           \
        TAG##_fwd_block(z, task, 0, N, D, bp, M, pad, logp, use_avx, slope, icpt, S, out, seg8, seg32, stats);\
    } else {                                                                                       \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                         \
        for (int b = 0; b < nthreads; b++)                                                         \
            TAG##_fwd_block(z, task, N * b / nthreads, N * (b + 1) / nthreads, D, bp, M, pad, logp,\
                            use_avx, slope, icpt, S, out, seg8, seg32, stats);                     \
    }                                                                                              \
    if (run_mean && stats)                                                                         \
        running_update(run_mean, run_var, run_mean_all, run_var_all, stats, task, N, D, T, momentum);\
    free(mem);                                                                                     \
    return use_avx;                                                                                \
}                                                                                                  \
                                                                                                   \
static void TAG##_bwd_block(const TIN *g, const TIN *z, const uint8_t *seg8, const int32_t *seg32, \
        const int64_t *task, int64_t n0, int64_t n1, int64_t D, const TACC *slope, int64_t S,      \
        TIN *dz, double *acc) {                                                                    \
    /* acc: (T, 4, S, 2) zeroed; four interleaved accumulators per (task, segment), so that        \
       runs of elements in one segment do not wait on each other's additions */                    \
    for (int64_t n = n0; n < n1; n++) {                                                            \
        const TACC *sl = slope + task[n] * S;                                                      \
        double *ag = acc + 8 * task[n] * S;                                                        \
        const TIN *gr = g + n * D, *zr = z + n * D; TIN *d = dz + n * D;                           \
        for (int64_t j = 0; j < D; j++) {                                                          \
            int s = seg8 ? seg8[n * D + j] : seg32[n * D + j];                                     \
            TACC gv = TAG##_load(gr[j]);                                                           \
            d[j] = TAG##_store(gv * sl[s]);                                                        \
            double *a = ag + 2 * ((j & 3) * S + s);                                                \
            a[0] += (double)gv; a[1] += (double)gv * (double)TAG##_load(zr[j]);                    \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Backward: dz, and the gradients of alpha (T, M) and hinges (M) (NULL to skip them).             \
   Returns 0, or 1 if out of memory. */                                                            \
int taan_bwd_##TAG(const TIN *g, const TIN *z, const uint8_t *seg8, const int32_t *seg32,          \
        const int64_t *task, int64_t N, int64_t D, const TACC *alpha, const TACC *hinges, int64_t T,\
        int64_t M, TIN *dz, TACC *dalpha, TACC *dhinges, int nthreads) {                           \
    int64_t S = M + 2;                                                                             \
    int blocks = nthreads > 1 ? nthreads : 1;                                                      \
    size_t per = (size_t)(8 * T * S);                                                              \
    char *mem = (char *)malloc(sizeof(TT##_keyed) * (size_t)(M + 1) + sizeof(int64_t) * (size_t)(M + 1)\
                               + sizeof(TACC) * (size_t)(3 * M + 3 + 2 * T * S));                  \
    double *sums = (double *)malloc(sizeof(double) * (size_t)(2 * T * S + 2 * S + M + 1));         \
    double *acc = (double *)calloc(per * (size_t)blocks, sizeof(double));                          \
    if (!mem || !sums || !acc) { free(mem); free(sums); free(acc); return 1; }                     \
    TT##_keyed *keys = (TT##_keyed *)mem;                                                          \
    int64_t *order = (int64_t *)(keys + M + 1);                                                    \
    TACC *bp = (TACC *)(order + M + 1), *tmp = bp + M + 1, *slope = tmp + 2 * (M + 1), *icpt = slope + T * S;\
    double *g1 = sums, *g2 = g1 + T * S, *dtmp = g2 + T * S;                                       \
    int64_t q = TT##_tables(alpha, hinges, T, M, keys, bp, order, slope, icpt, tmp);               \
    if (blocks == 1) {                                                                             \
        TAG##_bwd_block(g, z, seg8, seg32, task, 0, N, D, slope, S, dz, acc);                      \
    } else {                                                                                       \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                         \
        for (int b = 0; b < blocks; b++)                                                           \
            TAG##_bwd_block(g, z, seg8, seg32, task, N * b / blocks, N * (b + 1) / blocks, D, slope, S,\
                            dz, acc + per * (size_t)b);                                            \
    }                                                                                              \
    /* merge in a fixed order, so that results do not depend on thread timing */                   \
    for (int64_t i = 0; i < T * S; i++) { g1[i] = 0; g2[i] = 0; }                                  \
    for (int b = 0; b < blocks; b++)                                                               \
        for (int64_t t = 0; t < T; t++)                                                            \
            for (int l = 0; l < 4; l++)                                                            \
                for (int64_t s = 0; s < S; s++) {                                                  \
                    const double *a = acc + per * (size_t)b + 8 * t * S + 2 * (l * S + s);         \
                    g2[t * S + s] += a[0]; g1[t * S + s] += a[1];                                  \
                }                                                                                  \
    if (dalpha) TT##_table_grads(g1, g2, alpha, bp, order, q, T, M, dalpha, dhinges, dtmp);        \
    free(acc); free(sums); free(mem);                                                              \
    return 0;                                                                                      \
}

#ifdef TAAN_HAVE_AVX512
#define AVX_CALL_f32 avx_fwd_f32
#define AVX_CALL_bf16 avx_fwd_bf16
#define AVX_F32 1
#else
#define AVX_CALL_f32(...) ((void)0)
#define AVX_CALL_bf16(...) ((void)0)
#define AVX_F32 0
#endif
#define AVX_CALL_f64(...) ((void)0)

/* Whether this build holds the AVX-512 forward path (the compiler targeted AVX-512F). */
int taan_has_avx512(void) { return AVX_F32; }

DEFINE_KERNELS(f32, float, float, AVX_F32, f32)
DEFINE_KERNELS(f64, double, double, 0, f64)
DEFINE_KERNELS(bf16, bf16_t, float, AVX_F32, f32)
