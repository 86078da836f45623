/* One BYOL view per sample, fused: crop+flip (bilinear) -> colour jitter (per-sample order) -> grayscale ->
 * Gaussian blur -> solarize -> clip -> normalize. Saturation blends with gray or scales S in HSV; the blur pads
 * by reflection or with zeros (the ViewSpec's saturation_mode and blur_padding).
 *
 * This is the CPU fast path of byol.augment.views; byol/augment/fused.py compiles it on first use and falls
 * back to the eager torch ops (byol/augment/ops.py) when no C compiler is available. It computes exactly what
 * those ops compute (same formulas, same per-sample parameters drawn in Python; results agree to float
 * rounding, tested in tests/augment/test_augment_fused.py). Why it is faster: the eager pipeline makes ~100
 * passes over the whole batch (each a few MB, i.e. L2/L3 traffic and a thread fork/join per pass), while
 * here every sample (3 x 32 x 32 floats = 12 KB) stays in L1 while all its ops run, and the batch is split
 * over threads once per call.
 *
 * Plain C99 + pthreads, no Python or torch headers: it compiles in about a second and is called via ctypes.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LUMA_R 0.2989f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

typedef struct {
    const void *src;        /* [B, C, H, W] uint8 or float32, contiguous */
    int src_is_float;
    int B, C, H, W, S;
    float *out;             /* [B, C, S, S] float32, contiguous */
    const float *theta;     /* [B, 4]: sx, tx, sy, ty (F.affine_grid convention, align_corners=False) */
    const uint8_t *jitter;  /* [B] or NULL */
    const float *bright, *contrast, *sat, *hue; /* [B] each, NULL = op disabled */
    const int64_t *order;   /* [B, 4] permutation of 0..3 (brightness, contrast, saturation, hue) */
    int bright_mult;        /* 0: x + delta (paper), 1: x * factor (torchvision) */
    int sat_hsv;            /* 0: blend with gray (torchvision), 1: S * factor in HSV (paper's code) */
    const uint8_t *gray;    /* [B] or NULL */
    const uint8_t *blur;    /* [B] or NULL */
    const float *taps;      /* [B, K] normalised 1-D Gaussian taps */
    int K;
    int blur_zeros;         /* 0: reflect padding, 1: zeros (the paper's 'SAME' convolution) */
    const uint8_t *solar;   /* [B] or NULL */
    float thr;
    const float *mean, *std; /* [C] */
    int b0, b1;             /* this thread's sample range */
} job_t;

static inline float clip01(float v) { return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v); }

static inline int reflect(int i, int n) { /* torch's "reflect" padding (edge not repeated), |offset| < n */
    if (i < 0) return -i;
    if (i >= n) return 2 * (n - 1) - i;
    return i;
}

/* The padded source index of i in [0, n): reflected, or -1 (a zero) with zero padding. */
static inline int padded(int i, int n, int zeros) {
    if (zeros && (i < 0 || i >= n)) return -1;
    return reflect(i, n);
}

/* Bilinear sample of an axis-aligned box, border padding: grid_sample(align_corners=False). Separable: each
 * output row first blends its two input rows over the full width (contiguous, vectorised), then each output
 * pixel blends two neighbours of that blended row (an L1 gather). row holds W floats. */
static void crop(const job_t *j, int b, float *dst, float *row) {
    const int C = j->C, H = j->H, W = j->W, S = j->S;
    const float *th = j->theta + 4 * b;
    int x0[S], x1[S], y0[S], y1[S];
    float wx[S], wy[S];
    for (int k = 0; k < S; k++) {
        float u = ((float)k * 2.0f + 1.0f) / (float)S - 1.0f; /* output pixel centre, normalised */
        float gx = th[0] * u + th[1], gy = th[2] * u + th[3];
        float ix = ((gx + 1.0f) * (float)W - 1.0f) / 2.0f;
        float iy = ((gy + 1.0f) * (float)H - 1.0f) / 2.0f;
        ix = ix < 0.0f ? 0.0f : (ix > (float)(W - 1) ? (float)(W - 1) : ix);
        iy = iy < 0.0f ? 0.0f : (iy > (float)(H - 1) ? (float)(H - 1) : iy);
        float fx = floorf(ix), fy = floorf(iy);
        x0[k] = (int)fx; wx[k] = ix - fx; x1[k] = x0[k] + 1 < W ? x0[k] + 1 : W - 1;
        y0[k] = (int)fy; wy[k] = iy - fy; y1[k] = y0[k] + 1 < H ? y0[k] + 1 : H - 1;
    }
    const size_t plane = (size_t)H * W;
    const float s = 1.0f / 255.0f;
    for (int c = 0; c < C; c++) {
        float *o = dst + (size_t)c * S * S;
        for (int r = 0; r < S; r++) {
            const float vy = wy[r];
            if (j->src_is_float) {
                const float *p = (const float *)j->src + ((size_t)b * C + c) * plane;
                const float *ra = p + (size_t)y0[r] * W, *rb = p + (size_t)y1[r] * W;
                for (int x = 0; x < W; x++) row[x] = ra[x] + vy * (rb[x] - ra[x]);
            } else {
                const uint8_t *p = (const uint8_t *)j->src + ((size_t)b * C + c) * plane;
                const uint8_t *ra = p + (size_t)y0[r] * W, *rb = p + (size_t)y1[r] * W;
                for (int x = 0; x < W; x++) {
                    float a = (float)ra[x] * s, d = (float)rb[x] * s;
                    row[x] = a + vy * (d - a);
                }
            }
            float *orow = o + (size_t)r * S;
            for (int k = 0; k < S; k++) {
                float a = row[x0[k]];
                orow[k] = a + wx[k] * (row[x1[k]] - a);
            }
        }
    }
}

static void brightness(float *x, int n, float v, int mult) {
    if (mult) for (int i = 0; i < n; i++) x[i] = clip01(x[i] * v);
    else for (int i = 0; i < n; i++) x[i] = clip01(x[i] + v);
}

static void contrast(float *x, int C, int P, float f) {
    for (int c = 0; c < C; c++) {
        float *p = x + (size_t)c * P;
        double acc = 0.0;
        for (int i = 0; i < P; i++) acc += p[i];
        float shift = (float)(acc / P) * (1.0f - f);
        for (int i = 0; i < P; i++) p[i] = clip01(p[i] * f + shift);
    }
}

static void saturation(float *x, int P, float f) {
    float *r = x, *g = x + P, *b = x + 2 * P;
    float w = 1.0f - f;
    for (int i = 0; i < P; i++) {
        float gr = (r[i] * LUMA_R + g[i] * LUMA_G + b[i] * LUMA_B) * w;
        r[i] = clip01(r[i] * f + gr);
        g[i] = clip01(g[i] * f + gr);
        b[i] = clip01(b[i] * f + gr);
    }
}

/* HSV saturation (see ops._saturation_hsv): channel' = v - (v - channel) * min(f, v / c), v = max, c = chroma. */
static void saturation_hsv(float *x, int P, float f) {
    float *r = x, *g = x + P, *b = x + 2 * P;
    const float tiny = 1.17549435e-38f;
    for (int i = 0; i < P; i++) {
        float R = r[i], G = g[i], Bv = b[i];
        float mx = R > G ? R : G; mx = mx > Bv ? mx : Bv;
        float mn = R < G ? R : G; mn = mn < Bv ? mn : Bv;
        float c = mx - mn;
        float ratio = (1.0f / (c > tiny ? c : tiny)) * mx;
        ratio = ratio < f ? ratio : f;
        r[i] = clip01((R - mx) * ratio + mx);
        g[i] = clip01((G - mx) * ratio + mx);
        b[i] = clip01((Bv - mx) * ratio + mx);
    }
}

/* Hue rotation in the HSV hexcone, closed form (see ops.adjust_hue): v = max and c = max - min are kept,
 * channel_n = v - c * clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6, n = 5, 3, 1 for R, G, B. */
static void hue(float *x, int P, float shift) {
    float *r = x, *g = x + P, *b = x + 2 * P;
    const float tiny = 1.17549435e-38f, s6 = 6.0f * shift;
    for (int i = 0; i < P; i++) {
        float R = r[i], G = g[i], Bv = b[i];
        float mx = R > G ? R : G; mx = mx > Bv ? mx : Bv;
        float mn = R < G ? R : G; mn = mn < Bv ? mn : Bv;
        float c = mx - mn;
        float inv = 1.0f / (c > tiny ? c : tiny);
        float h = (mx == R) ? (G - Bv) : ((mx == G) ? (Bv - R + 2.0f * c) : (R - G + 4.0f * c));
        h = h * inv + s6;
        float k, t;
        k = h + 5.0f; k -= 6.0f * floorf(k * (1.0f / 6.0f)); t = 4.0f - k; t = k < t ? k : t;
        r[i] = clip01(mx - c * clip01(t));
        k = h + 3.0f; k -= 6.0f * floorf(k * (1.0f / 6.0f)); t = 4.0f - k; t = k < t ? k : t;
        g[i] = clip01(mx - c * clip01(t));
        k = h + 1.0f; k -= 6.0f * floorf(k * (1.0f / 6.0f)); t = 4.0f - k; t = k < t ? k : t;
        b[i] = clip01(mx - c * clip01(t));
    }
}

static void grayscale(float *x, int P) {
    float *r = x, *g = x + P, *b = x + 2 * P;
    for (int i = 0; i < P; i++) {
        float v = r[i] * LUMA_R + g[i] * LUMA_G + b[i] * LUMA_B;
        r[i] = v; g[i] = v; b[i] = v;
    }
}

/* Separable blur, reflect or zero padding; tmp holds one plane. */
static void blur(float *x, int C, int S, const float *taps, int K, int zeros, float *tmp) {
    const int p = K / 2;
    for (int c = 0; c < C; c++) {
        float *pl = x + (size_t)c * S * S;
        for (int r = 0; r < S; r++) {
            const float *row = pl + (size_t)r * S;
            float *t = tmp + (size_t)r * S;
            const int lo = p < S ? p : S, hi = S - p > lo ? S - p : lo; /* interior: no reflection */
            for (int k = 0; k < lo; k++) {
                float acc = 0.0f;
                for (int q = 0; q < K; q++) {
                    const int i = padded(k - p + q, S, zeros);
                    if (i >= 0) acc += taps[q] * row[i];
                }
                t[k] = acc;
            }
            for (int k = lo; k < hi; k++) t[k] = taps[0] * row[k - p];
            for (int q = 1; q < K; q++) {
                const float w = taps[q];
                const float *rq = row + q - p;
                for (int k = lo; k < hi; k++) t[k] += w * rq[k];
            }
            for (int k = hi; k < S; k++) {
                float acc = 0.0f;
                for (int q = 0; q < K; q++) {
                    const int i = padded(k - p + q, S, zeros);
                    if (i >= 0) acc += taps[q] * row[i];
                }
                t[k] = acc;
            }
        }
        for (int r = 0; r < S; r++) {
            float *o = pl + (size_t)r * S;
            for (int k = 0; k < S; k++) o[k] = 0.0f;
            for (int q = 0; q < K; q++) {
                const int i = padded(r - p + q, S, zeros);
                if (i < 0) continue;
                const float *t = tmp + (size_t)i * S;
                float w = taps[q];
                for (int k = 0; k < S; k++) o[k] += w * t[k];
            }
        }
    }
}

static void *run(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int C = j->C, S = j->S, P = S * S;
    /* one plane for the blur, one input row for the crop */
    float *tmp = (float *)malloc(sizeof(float) * ((size_t)P + (size_t)j->W));
    if (!tmp) return (void *)1;
    for (int b = j->b0; b < j->b1; b++) {
        float *x = j->out + (size_t)b * C * P;
        crop(j, b, x, tmp + P);
        if (j->jitter && j->jitter[b]) {
            for (int slot = 0; slot < 4; slot++) {
                switch ((int)j->order[4 * b + slot]) {
                case 0: if (j->bright) brightness(x, C * P, j->bright[b], j->bright_mult); break;
                case 1: if (j->contrast) contrast(x, C, P, j->contrast[b]); break;
                case 2:
                    if (j->sat && C == 3) {
                        if (j->sat_hsv) saturation_hsv(x, P, j->sat[b]);
                        else saturation(x, P, j->sat[b]);
                    }
                    break;
                case 3: if (j->hue && C == 3) hue(x, P, j->hue[b]); break;
                default: break;
                }
            }
        }
        if (j->gray && C == 3 && j->gray[b]) grayscale(x, P);
        if (j->blur && j->K > 1 && j->blur[b]) blur(x, C, S, j->taps + (size_t)b * j->K, j->K, j->blur_zeros, tmp);
        if (j->solar && j->solar[b]) {
            if (j->thr == 0.5f) for (int i = 0; i < C * P; i++) x[i] = 0.5f - fabsf(x[i] - 0.5f);
            else for (int i = 0; i < C * P; i++) x[i] = x[i] >= j->thr ? 1.0f - x[i] : x[i];
        }
        for (int c = 0; c < C; c++) {
            float *pl = x + (size_t)c * P;
            const float m = j->mean[c], s = j->std[c];
            for (int i = 0; i < P; i++) pl[i] = (clip01(pl[i]) - m) / s;
        }
    }
    free(tmp);
    return NULL;
}

/* Returns 0 on success. All pointers as described in job_t; nthreads >= 1. */
int byol_fused_view(const void *src, int src_is_float, int B, int C, int H, int W, float *out, int S,
                    const float *theta, const uint8_t *jitter, const float *bright, const float *contrast_f,
                    const float *sat, const float *hue_s, const int64_t *order, int bright_mult, int sat_hsv,
                    const uint8_t *gray, const uint8_t *blur_m, const float *taps, int K, int blur_zeros,
                    const uint8_t *solar, float thr, const float *mean, const float *std, int nthreads) {
    if (B <= 0) return 0;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > B) nthreads = B;
    if (nthreads > 64) nthreads = 64;
    job_t jobs[64];
    pthread_t tid[64];
    int started[64] = {0};
    for (int t = 0; t < nthreads; t++) {
        job_t *j = &jobs[t];
        j->src = src; j->src_is_float = src_is_float;
        j->B = B; j->C = C; j->H = H; j->W = W; j->S = S; j->out = out; j->theta = theta;
        j->jitter = jitter; j->bright = bright; j->contrast = contrast_f; j->sat = sat; j->hue = hue_s;
        j->order = order; j->bright_mult = bright_mult; j->sat_hsv = sat_hsv; j->gray = gray; j->blur = blur_m;
        j->taps = taps; j->K = K; j->blur_zeros = blur_zeros; j->solar = solar; j->thr = thr;
        j->mean = mean; j->std = std;
        j->b0 = (int)((long)B * t / nthreads); j->b1 = (int)((long)B * (t + 1) / nthreads);
    }
    int rc = 0;
    for (int t = 1; t < nthreads; t++) started[t] = pthread_create(&tid[t], NULL, run, &jobs[t]) == 0;
    for (int t = 1; t < nthreads; t++) /* a thread that failed to start: do its share here */
        if (!started[t] && run(&jobs[t]) != NULL) rc = 1;
    if (run(&jobs[0]) != NULL) rc = 1;
    for (int t = 1; t < nthreads; t++) {
        void *res = NULL;
        if (started[t]) { pthread_join(tid[t], &res); if (res != NULL) rc = 1; }
    }
    return rc;
}
