/* regstudy._products: the stacked layers' matrix products, with one result on every CPU.

   For each member k:  O[k][i][j] = init + sum over p = 0, 1, ..., P-1 of L[k][i][p] * R[k][p][j]

   where init is bias[k][j] (or 0), and the sum is one chain of fused multiply-adds in
   ascending p:  acc = init;  acc = fmaf(L[i][p], R[p][j], acc) for p = 0, 1, ...
   Each step rounds once (IEEE 754 fusedMultiplyAdd), so the result is defined by the
   inputs alone, not by the code that computes it: the AVX2 kernel below (8 columns per
   instruction, a 6 x 16 tile of the output in registers) and the plain loop (any CPU)
   give the same bits, on any CPU, at any vector width. MKL, by contrast, picks its
   summation order by the CPU it finds.

   A product may end with the layer's leaky ReLU (epilogue `leaky`): each element, once
   its chain is done, becomes  acc > 0 ? acc : acc * slope  (one rounding, torch's
   formula), so the activation costs no second pass over memory.

   Two exact reductions serve the per-epoch statistics (regstudy.metrics): each unit's
   largest and smallest output over the rows (`extrema`), and counts over a kernel's
   entries (`kernel_counts`). Comparisons and counts round nothing, so they equal torch's
   amax, amin and sums of 0/1 whatever order they run in.

   No Python object is touched while computing: the caller (regstudy.products,
   regstudy.metrics) checks the tensors and passes their data pointers and strides (in
   elements). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    long M, N, P;
    const float *L; long lsi, lsp;   /* L[i][p] at L + i*lsi + p*lsp */
    const float *R; long rsp;        /* R[p][j] at R + p*rsp + j (rows contiguous: see `rows`) */
    float *O; long osi;              /* O[i][j] at O + i*osi + j (rows contiguous) */
    const float *bias;               /* bias[j] at bias + j, or NULL for 0 */
    int leaky; float slope;          /* the epilogue: leaky ReLU with this slope, or none */
} Product;

/* The definition, one element at a time: the reference every other path must equal. */
static void product_loop(const Product *q)
{
    for (long i = 0; i < q->M; i++)
        for (long j = 0; j < q->N; j++) {
            float acc = q->bias ? q->bias[j] : 0.0f;
            for (long p = 0; p < q->P; p++)
                acc = fmaf(q->L[i * q->lsi + p * q->lsp], q->R[p * q->rsp + j], acc);
            if (q->leaky) acc = acc > 0.0f ? acc : acc * q->slope;
            q->O[i * q->osi + j] = acc;
        }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define AVX2 __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

INLINE AVX2 __m256 load8(const float *a, int masked, __m256i mask)
{
    return masked ? _mm256_maskload_ps(a, mask) : _mm256_loadu_ps(a);
}

INLINE AVX2 void store8(float *a, __m256 v, int masked, __m256i mask)
{
    if (masked) _mm256_maskstore_ps(a, mask, v);
    else _mm256_storeu_ps(a, v);
}

/* Rows i0..i0+mr-1 and columns j0..j0+8*nv-1 of O (the last 8 masked if `masked`), in
   registers from the first p to the last. mr, nv and masked are constants at every call. */
INLINE AVX2 void tile(const int mr, const int nv, const int masked, const Product *q,
                      long i0, long j0, __m256i mask)
{
    __m256 acc[6][2];
    const long P = q->P, lsi = q->lsi, lsp = q->lsp, rsp = q->rsp, osi = q->osi;
    float *o = q->O + i0 * osi + j0;
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++)
            acc[r][v] = q->bias ? load8(q->bias + j0 + 8 * v, masked && v == nv - 1, mask)
                                : _mm256_setzero_ps();
    const float *l = q->L + i0 * lsi, *row = q->R + j0;
    for (long p = 0; p < P; p++, l += lsp, row += rsp) {
        __m256 b[2];
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) b[v] = load8(row + 8 * v, masked && v == nv - 1, mask);
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++) {
            __m256 a = _mm256_broadcast_ss(l + r * lsi);
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
    if (q->leaky) {  /* torch's vectorized leaky ReLU: blendv(a * slope, a, a > 0) */
        const __m256 slope = _mm256_set1_ps(q->slope), zero = _mm256_setzero_ps();
#pragma GCC unroll 6
        for (int r = 0; r < mr; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                acc[r][v] = _mm256_blendv_ps(_mm256_mul_ps(acc[r][v], slope), acc[r][v],
                                             _mm256_cmp_ps(acc[r][v], zero, _CMP_GT_OQ));
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) store8(o + r * osi + 8 * v, acc[r][v], masked && v == nv - 1, mask);
}

/* Every row of one band of 8*nv columns: tiles of 6 rows, then the 1 to 5 left. */
#define BAND(NV, MASKED)                                                              \
    static AVX2 void band_##NV##_##MASKED(const Product *q, long j0, __m256i mask)     \
    {                                                                                 \
        long i = 0;                                                                   \
        for (; i + 6 <= q->M; i += 6) tile(6, NV, MASKED, q, i, j0, mask);            \
        switch (q->M - i) {                                                           \
        case 5: tile(5, NV, MASKED, q, i, j0, mask); break;                           \
        case 4: tile(4, NV, MASKED, q, i, j0, mask); break;                           \
        case 3: tile(3, NV, MASKED, q, i, j0, mask); break;                           \
        case 2: tile(2, NV, MASKED, q, i, j0, mask); break;                           \
        case 1: tile(1, NV, MASKED, q, i, j0, mask); break;                           \
        }                                                                             \
    }
BAND(1, 0)
BAND(1, 1)
BAND(2, 0)
BAND(2, 1)

static AVX2 void product_avx2(const Product *q)
{
    const __m256i all = _mm256_set1_epi32(-1);
    long j = 0;
    for (; j + 16 <= q->N; j += 16) band_2_0(q, j, all);
    const long rest = q->N - j;  /* 0 to 15 columns */
    if (rest == 0) return;
    int32_t lanes[8];
    for (int t = 0; t < 8; t++) lanes[t] = t < rest % 8 ? -1 : 0;
    const __m256i mask = _mm256_loadu_si256((const __m256i *)lanes);
    if (rest == 8) band_1_0(q, j, all);
    else if (rest < 8) band_1_1(q, j, mask);
    else band_2_1(q, j, mask);
}
#endif

#if defined(__x86_64__)
/* dst[p][j] = src[j][p] for an 8 x 8 block (src rows sj apart, dst rows N apart). */
static AVX2 void transpose8(const float *src, long sj, float *dst, long N)
{
    __m256 r[8], t[8];
    for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(src + j * sj);
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 8; j += 4)
        for (int h = 0; h < 2; h++) {
            r[j + h] = _mm256_shuffle_ps(t[j + h], t[j + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
            r[j + h + 2] = _mm256_shuffle_ps(t[j + h], t[j + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
        }
    /* r[0..3] now hold columns 0, 2, 1, 3 (low lanes) and 4, 6, 5, 7 (high) of rows 0-3; r[4..7] of rows 4-7 */
    static const int col[4] = {0, 2, 1, 3};
    for (int c = 0; c < 4; c++) {
        _mm256_storeu_ps(dst + col[c] * N, _mm256_permute2f128_ps(r[c], r[c + 4], 0x20));
        _mm256_storeu_ps(dst + (col[c] + 4) * N, _mm256_permute2f128_ps(r[c], r[c + 4], 0x31));
    }
}
#endif

/* R[p][j] read at src + p*sp + j*sj, written with contiguous rows (dst + p*N + j): the
   kernels read R a row at a time. Blocks of 8 x 8 keep both sides in cache; a transposed
   kernel (sp = 1) moves a block in registers on the AVX2 path. A copy, so no rounding. */
static void rows(const float *src, long sp, long sj, long P, long N, float *dst, int avx2)
{
#if defined(__x86_64__)
    if (avx2 && sp == 1) {
        const long P8 = P - P % 8, N8 = N - N % 8;
        for (long p0 = 0; p0 < P8; p0 += 8)
            for (long j0 = 0; j0 < N8; j0 += 8) transpose8(src + p0 + j0 * sj, sj, dst + p0 * N + j0, N);
        for (long p = 0; p < P; p++)  /* the edges: rows past P8, columns past N8 */
            for (long j = p < P8 ? N8 : 0; j < N; j++) dst[p * N + j] = src[p + j * sj];
        return;
    }
#endif
    for (long p0 = 0; p0 < P; p0 += 8)
        for (long j0 = 0; j0 < N; j0 += 8)
            for (long j = j0; j < j0 + 8 && j < N; j++)
                for (long p = p0; p < p0 + 8 && p < P; p++)
                    dst[p * N + j] = src[p * sp + j * sj];
}

typedef enum { LOOP = 0, AVX2_FMA = 1 } Path;
static Path path = LOOP;

static int available(Path p)
{
#if defined(__x86_64__)
    if (p == AVX2_FMA) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return p == LOOP;
}

/* The first n arguments as C longs (pointers, sizes and strides in elements) into a, when
   there are exactly `want` arguments; 0 with an exception set otherwise. */
static int longs(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, int n, const char *name, long *a)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments, not %zd", name, want, nargs);
        return 0;
    }
    for (int t = 0; t < n; t++) {
        a[t] = PyLong_AsLong(args[t]);
        if (a[t] == -1 && PyErr_Occurred()) return 0;
    }
    return 1;
}

/* products(K, M, N, P, L, lsk, lsi, lsp, R, rsk, rsp, rsj, O, osk, osi, bias, bsk, leaky, slope):
   see the top (slope a float, the rest ints). A right-hand side whose rows are not
   contiguous (rsj != 1, such as a transposed kernel in the backward pass) is copied, one
   member at a time, into contiguous rows. */
static PyObject *products(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long a[18];
    if (!longs(args, nargs, 19, 18, "products", a)) return NULL;
    const double slope = PyFloat_AsDouble(args[18]);
    if (slope == -1.0 && PyErr_Occurred()) return NULL;
    const long K = a[0], N = a[2], P = a[3], lsk = a[5], rsk = a[9], rsp = a[10], rsj = a[11];
    const long osk = a[13], bsk = a[16];
    const float *L = (const float *)(intptr_t)a[4], *R = (const float *)(intptr_t)a[8];
    const float *bias = (const float *)(intptr_t)a[15];
    float *O = (float *)(intptr_t)a[12];
    float *scratch = NULL;
    if (rsj != 1 && (scratch = malloc(sizeof(float) * (P * N > 0 ? P * N : 1))) == NULL) return PyErr_NoMemory();
    Product q = {a[1], N, P, NULL, a[6], a[7], NULL, scratch ? N : rsp, NULL, a[14], NULL, a[17] != 0, (float)slope};
    Py_BEGIN_ALLOW_THREADS
    for (long k = 0; k < K; k++) {
        q.L = L + k * lsk;
        if (scratch) rows(R + k * rsk, rsp, rsj, P, N, scratch, path == AVX2_FMA);
        q.R = scratch ? scratch : R + k * rsk;
        q.O = O + k * osk;
        q.bias = bias ? bias + k * bsk : NULL;
#if defined(__x86_64__)
        if (path == AVX2_FMA) product_avx2(&q);
        else
#endif
            product_loop(&q);
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    Py_RETURN_NONE;
}

/* Each unit's largest and smallest value over rows 0..M-1 of X (X[i][u] at X + i*xsi + u),
   into hi[u] and lo[u], NaN where a row holds NaN (as torch's amax and amin). */
static void extrema_loop(long M, long U, const float *X, long xsi, float *hi, float *lo)
{
    for (long u = 0; u < U; u++) {
        float h = X[u], l = X[u];
        int has_nan = isnan(h);
        for (long i = 1; i < M; i++) {
            const float v = X[i * xsi + u];
            has_nan |= isnan(v);
            h = v > h ? v : h;
            l = v < l ? v : l;
        }
        hi[u] = has_nan ? NAN : h;
        lo[u] = has_nan ? NAN : l;
    }
}

#if defined(__x86_64__)
/* Units u0..u0+8*nv-1 of extrema_loop, nv chains of rows side by side. max_ps(v, h)
   returns h when either is NaN; a NaN is noted apart and put back at the end. */
INLINE AVX2 void extrema_block(const int nv, long M, const float *X, long xsi, long u0, float *hi, float *lo)
{
    __m256 h[4], l[4], has_nan[4];
    for (int v = 0; v < nv; v++) {
        h[v] = l[v] = _mm256_loadu_ps(X + u0 + 8 * v);
        has_nan[v] = _mm256_cmp_ps(h[v], h[v], _CMP_UNORD_Q);
    }
    for (long i = 1; i < M; i++) {
        const float *row = X + i * xsi + u0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const __m256 x = _mm256_loadu_ps(row + 8 * v);
            has_nan[v] = _mm256_or_ps(has_nan[v], _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
            h[v] = _mm256_max_ps(x, h[v]);
            l[v] = _mm256_min_ps(x, l[v]);
        }
    }
    const __m256 nans = _mm256_set1_ps(NAN);
    for (int v = 0; v < nv; v++) {
        _mm256_storeu_ps(hi + u0 + 8 * v, _mm256_blendv_ps(h[v], nans, has_nan[v]));
        _mm256_storeu_ps(lo + u0 + 8 * v, _mm256_blendv_ps(l[v], nans, has_nan[v]));
    }
}

static AVX2 void extrema_avx2(long M, long U, const float *X, long xsi, float *hi, float *lo)
{
    long u = 0;
    for (; u + 32 <= U; u += 32) extrema_block(4, M, X, xsi, u, hi, lo);
    for (; u + 8 <= U; u += 8) extrema_block(1, M, X, xsi, u, hi, lo);
    if (u < U) extrema_loop(M, U - u, X + u, xsi, hi + u, lo + u);
}
#endif

/* extrema(K, M, U, X, xsk, xsi, hi, lo): for every member k, extrema_loop of X + k*xsk
   into hi + k*U and lo + k*U (each (K, U), contiguous). */
static PyObject *extrema(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long a[8];
    if (!longs(args, nargs, 8, 8, "extrema", a)) return NULL;
    const long K = a[0], M = a[1], U = a[2], xsk = a[4], xsi = a[5];
    const float *X = (const float *)(intptr_t)a[3];
    float *hi = (float *)(intptr_t)a[6], *lo = (float *)(intptr_t)a[7];
    if (M < 1) {
        PyErr_SetString(PyExc_ValueError, "extrema() needs at least one row");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    for (long k = 0; k < K; k++) {
#if defined(__x86_64__)
        if (path == AVX2_FMA) extrema_avx2(M, U, X + k * xsk, xsi, hi + k * U, lo + k * U);
        else
#endif
            extrema_loop(M, U, X + k * xsk, xsi, hi + k * U, lo + k * U);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Counts over columns j0..N-1 of one member's kernel W (P x N, rows contiguous), added to
   out: entries with |w| < small, entries equal to 0 (either sign), and columns whose
   entries are all 0. */
static void counts_loop(long P, long N, long j0, const float *W, float small, long long *out)
{
    for (long j = j0; j < N; j++) {
        int all = 1;
        for (long p = 0; p < P; p++) {
            const float w = W[p * N + j];
            out[0] += fabsf(w) < small;
            out[1] += w == 0.0f;
            all &= w == 0.0f;
        }
        out[2] += all;
    }
}

#if defined(__x86_64__)
static AVX2 long long lanes_sum(__m256i v)
{
    int32_t t[8];
    long long s = 0;
    _mm256_storeu_si256((__m256i *)t, v);
    for (int i = 0; i < 8; i++) s += t[i];
    return s;
}

/* counts_loop, 8 columns at a time (a comparison's mask is -1 where true, so subtracting
   it counts); the last N % 8 columns by the loop. A lane counts at most P * N / 8, far
   below 2^31 for any kernel in memory. */
static AVX2 void counts_avx2(long P, long N, const float *W, float small, long long *out)
{
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 limit = _mm256_set1_ps(small), zero = _mm256_setzero_ps();
    __m256i below = _mm256_setzero_si256(), zeros = _mm256_setzero_si256(), dead = _mm256_setzero_si256();
    long j = 0;
    for (; j + 8 <= N; j += 8) {
        __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
        for (long p = 0; p < P; p++) {
            const __m256 w = _mm256_loadu_ps(W + p * N + j);
            const __m256 is_zero = _mm256_cmp_ps(w, zero, _CMP_EQ_OQ);
            below = _mm256_sub_epi32(below, _mm256_castps_si256(
                _mm256_cmp_ps(_mm256_and_ps(w, magnitude), limit, _CMP_LT_OQ)));
            zeros = _mm256_sub_epi32(zeros, _mm256_castps_si256(is_zero));
            all = _mm256_and_ps(all, is_zero);
        }
        dead = _mm256_sub_epi32(dead, _mm256_castps_si256(all));
    }
    out[0] += lanes_sum(below), out[1] += lanes_sum(zeros), out[2] += lanes_sum(dead);
    counts_loop(P, N, j, W, small, out);
}
#endif

/* kernel_counts(K, P, N, W, wsk, small, out): for every member k, the three counts of
   counts_loop over W + k*wsk into out[3k..3k+2] (int64); small is a float. */
static PyObject *kernel_counts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long a[7];
    if (!longs(args, nargs, 7, 5, "kernel_counts", a)) return NULL;
    const double small = PyFloat_AsDouble(args[5]);
    if (small == -1.0 && PyErr_Occurred()) return NULL;
    a[6] = PyLong_AsLong(args[6]);
    if (a[6] == -1 && PyErr_Occurred()) return NULL;
    const long K = a[0], P = a[1], N = a[2], wsk = a[4];
    const float *W = (const float *)(intptr_t)a[3];
    long long *out = (long long *)(intptr_t)a[6];
    Py_BEGIN_ALLOW_THREADS
    for (long k = 0; k < K; k++) {
        long long *o = out + 3 * k;
        o[0] = o[1] = o[2] = 0;
#if defined(__x86_64__)
        if (path == AVX2_FMA) counts_avx2(P, N, W + k * wsk, (float)small, o);
        else
#endif
            counts_loop(P, N, 0, W + k * wsk, (float)small, o);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static const char *NAMES[] = {"loop", "avx2"};

static PyObject *get_path(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(NAMES[path]);
}

static PyObject *set_path(PyObject *self, PyObject *arg)
{
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    for (int p = LOOP; p <= AVX2_FMA; p++)
        if (strcmp(name, NAMES[p]) == 0) {
            if (!available((Path)p)) {
                PyErr_Format(PyExc_ValueError, "path '%s' is not available on this CPU", name);
                return NULL;
            }
            path = (Path)p;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "path '%s': allowed 'loop' or 'avx2'", name);
    return NULL;
}

static PyObject *cpu_has_avx2(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(available(AVX2_FMA));
}

static PyMethodDef methods[] = {
    {"products", (PyCFunction)(void (*)(void))products, METH_FASTCALL,
     "products(K, M, N, P, L, lsk, lsi, lsp, R, rsk, rsp, rsj, O, osk, osi, bias, bsk, leaky, slope): "
     "O[k] = bias[k] + L[k] @ R[k], one chain of fused multiply-adds per element, then leaky ReLU if leaky"},
    {"extrema", (PyCFunction)(void (*)(void))extrema, METH_FASTCALL,
     "extrema(K, M, U, X, xsk, xsi, hi, lo): each unit's max and min over M rows, NaN where a row is NaN"},
    {"kernel_counts", (PyCFunction)(void (*)(void))kernel_counts, METH_FASTCALL,
     "kernel_counts(K, P, N, W, wsk, small, out): per member, entries with |w| < small, zeros, all-zero columns"},
    {"get_path", get_path, METH_NOARGS, "the path computing products: 'avx2' or 'loop'"},
    {"cpu_has_avx2", cpu_has_avx2, METH_NOARGS, "whether this CPU runs the 'avx2' path (AVX2 and FMA)"},
    {"set_path", set_path, METH_O, "compute with 'avx2' (where the CPU has it) or 'loop' (the same bits)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_products",
                                    "Batched matrix products with one result on every CPU.", -1, methods};

PyMODINIT_FUNC PyInit__products(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    path = available(AVX2_FMA) ? AVX2_FMA : LOOP;
    return PyModule_Create(&module);
}
