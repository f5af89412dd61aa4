"""The C source of :mod:`odimo_moo.native_kernels` (compiled there with the system's C compiler).

Plain C99 with gcc's vector extensions (also understood by clang): 16-float vectors, native on
AVX-512, split into narrower instructions elsewhere. Compiled without fast-math and without
multiply-add contraction, so every elementwise result is the IEEE result torch's eager ops give;
only the sums (clip, mask and scale gradients) are accumulated in another order, 16 lanes then a
double. ``fmaf`` where torch's own kernel fuses the multiply-add (``addcmul_``).
"""

SOURCE = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>

/* 16 float lanes: gcc's vector extension, native on AVX-512, split into narrower ops elsewhere. */
#define LANES 16
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
typedef int8_t vs8 __attribute__((vector_size(LANES)));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf zero_where(vf v, vi mask) { return (vf)((vi)v & ~mask); }  /* +0.0 where mask */

static inline float clamp_level(float v, float low, float high) {
    v = v < low ? low : v;  /* NaN stays NaN, as torch.clamp */
    return v > high ? high : v;
}

static inline float direction(float v, float level, float step, float low, float high) {
    return ((v <= low || v >= high) ? 0.0f : v) - level * step;
}

/* One-byte codes are widened to floats a block at a time by a plain loop, which gcc vectorizes;
   __builtin_convertvector on 16 one-byte lanes it lowers to one lane at a time (3-4x slower).
   BLOCK is a multiple of LANES, so the lanes' sums see the elements in the same order. */
#define BLOCK 256
#define WIDEN(SUFFIX, CODE)                                                                        \
static inline void widen_##SUFFIX(const CODE *restrict code, float *restrict out, int64_t n) {     \
    for (int64_t i = 0; i < n; ++i) out[i] = (float)code[i];                                       \
}
WIDEN(int8, int8_t)
WIDEN(uint8, uint8_t)

#define ACTIVATION_KERNELS(SUFFIX, CODE)                                                           \
void quantize_##SUFFIX(const float *restrict x, float *restrict out, CODE *restrict code,         \
                       int64_t n, float step, float low, float high) {                             \
    for (int64_t i = 0; i < n; ++i) {                                                              \
        float level = rintf(clamp_level(x[i] / step, low, high));                                  \
        out[i] = level * step;                                                                     \
        code[i] = (CODE)level;                                                                     \
    }                                                                                              \
}                                                                                                  \
double backward_##SUFFIX(float *restrict grad, const float *restrict x, const CODE *restrict code, \
                         int64_t n, float step, float low, float high) {                           \
    vf sums = {0}, steps = step - (vf){0}, lows = low - (vf){0}, highs = high - (vf){0};          \
    float levels[BLOCK];                                                                           \
    int64_t vector_end = n - n % LANES;                                                            \
    for (int64_t start = 0; start < vector_end; start += BLOCK) {                                  \
        int64_t stop = start + BLOCK < vector_end ? start + BLOCK : vector_end;                    \
        widen_##SUFFIX(code + start, levels, stop - start);                                        \
        for (int64_t i = start; i < stop; i += LANES) {                                            \
            vf v = load(x + i), g = load(grad + i);                                                \
            vi outside = (v <= lows) | (v >= highs);                                               \
            sums += g * (zero_where(v, outside) - load(levels + (i - start)) * steps);             \
            store(grad + i, zero_where(g, outside));                                               \
        }                                                                                          \
    }                                                                                              \
    double total = 0.0;                                                                            \
    for (int64_t i = vector_end; i < n; ++i) {                                                     \
        float v = x[i], g = grad[i];                                                               \
        total += g * direction(v, (float)code[i], step, low, high);                                \
        grad[i] = (v <= low || v >= high) ? 0.0f : g;                                              \
    }                                                                                              \
    for (int j = 0; j < LANES; ++j) total += sums[j];                                              \
    return total;                                                                                  \
}

ACTIVATION_KERNELS(int8, int8_t)
ACTIVATION_KERNELS(uint8, uint8_t)

static inline vf ones_where(vi mask) { return (vf)(mask & (vi)((vf){0} + 1.0f)); }  /* 1.0 or +0.0 */

static inline float horizontal_max(vf v) {
    float top = v[0];
    for (int j = 1; j < LANES; ++j) top = v[j] > top ? v[j] : top;
    return top;
}

/* max |w[i]| (0 for n = 0). */
static float absolute_max(const float *restrict w, int64_t n) {
    const vi magnitude_bits = (vi){0} + 0x7fffffff;
    vf tops = {0};
    float top = 0.0f;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        vf m = (vf)((vi)load(w + i) & magnitude_bits);
        vi higher = m > tops;
        tops = (vf)(((vi)m & higher) | ((vi)tops & ~higher));
    }
    for (; i < n; ++i) top = fabsf(w[i]) > top ? fabsf(w[i]) : top;
    float vector_top = horizontal_max(tops);
    return vector_top > top ? vector_top : top;
}

/* The int weight quantizer's scale: the smallest power of two >= max(max |w|, 1e-12) / high (exact:
   from frexp). w * (1 / scale) is then w / scale exactly (the reciprocal is a power of two too). */
static float int_weight_scale(const float *restrict w, int64_t n, float high) {
    float top = absolute_max(w, n);
    int exponent;
    float mantissa = frexpf((top < 1e-12f ? 1e-12f : top) / high, &exponent);
    return ldexpf(1.0f, mantissa == 0.5f ? exponent - 1 : exponent);
}

/* The int weight quantizer: clamp(round(w / scale), low, high) * scale. Returns the scale. */
float quantize_int_weight(const float *restrict w, float *restrict out, int64_t n, float low, float high) {
    float scale = int_weight_scale(w, n, high), inverse = 1.0f / scale;
    for (int64_t i = 0; i < n; ++i) out[i] = clamp_level(rintf(w[i] * inverse), low, high) * scale;
    return scale;
}

void quantize_ternary(const float *restrict w, const float *restrict delta, const float *restrict scale,
                      float *restrict out, int8_t *restrict hard, float *restrict largest, int64_t channels,
                      int64_t size) {
    const vi magnitude_bits = (vi){0} + 0x7fffffff;
    for (int64_t c = 0; c < channels; ++c) {
        const float *row = w + c * size;
        float d = delta[c], s = scale[c], top = 0.0f;
        vf tops = {0}, ds = d - (vf){0}, ss = s - (vf){0};
        int64_t i = 0;
        for (; i + LANES <= size; i += LANES) {
            vf v = load(row + i), m = (vf)((vi)v & magnitude_bits);
            /* sign(v) * [|v| > delta], as torch: -1 * 0 is -0.0 */
            vf h = (ones_where(v > 0.0f) - ones_where(v < 0.0f)) * ones_where(m > ds);
            if (out) store(out + c * size + i, h * ss);
            /* through int32 lanes: gcc's direct float -> int8 vector conversion runs ~6x slower */
            vs8 code = __builtin_convertvector(__builtin_convertvector(h, vi), vs8);
            memcpy(hard + c * size + i, &code, sizeof code);
            vi higher = m > tops;
            tops = (vf)(((vi)m & higher) | ((vi)tops & ~higher));
        }
        for (; i < size; ++i) {
            float v = row[i], m = fabsf(v);
            float h = ((v > 0.0f) - (v < 0.0f)) * (float)(m > d);
            if (out) out[c * size + i] = h * s;
            hard[c * size + i] = (int8_t)h;
            top = m > top ? m : top;
        }
        float vector_top = horizontal_max(tops);
        top = vector_top > top ? vector_top : top;
        largest[c] = top < 1e-12f ? 1e-12f : top;
    }
}

void mix_dense_forward(const float *restrict term, const float *restrict mask, int64_t mask_stride,
                       float *restrict mixed, int accumulate, int64_t channels, int64_t size) {
    for (int64_t c = 0; c < channels; ++c) {
        const float *t = term + c * size;
        float *out = mixed + c * size, m = mask[c * mask_stride];
        if (accumulate)
            for (int64_t i = 0; i < size; ++i) out[i] = fmaf(t[i], m, out[i]);  /* as torch's addcmul_ */
        else
            for (int64_t i = 0; i < size; ++i) out[i] = t[i] * m;
    }
}

void mix_dense_backward(const float *restrict grad, const float *restrict term, const float *restrict mask,
                        int64_t mask_stride, float *restrict grad_term, float *restrict grad_mask,
                        int64_t grad_mask_stride, int64_t channels, int64_t size) {
    for (int64_t c = 0; c < channels; ++c) {
        const float *g = grad + c * size, *t = term + c * size;
        float *out = grad_term ? grad_term + c * size : 0;
        float m = mask[c * mask_stride];
        vf sums = {0}, scale = m - (vf){0};
        int64_t i = 0;
        for (; i + LANES <= size; i += LANES) {
            vf gv = load(g + i);
            sums += gv * load(t + i);
            if (out) store(out + i, gv * scale);
        }
        double total = 0.0;
        for (; i < size; ++i) {
            total += g[i] * t[i];
            if (out) out[i] = g[i] * m;
        }
        for (int j = 0; j < LANES; ++j) total += sums[j];
        if (grad_mask) grad_mask[c * grad_mask_stride] = (float)total;
    }
}

/* One row of an encoded term of the weight mix: out (+)= levels * s * m, as mix_dense_forward on the
   decoded row (fmaf, as torch's addcmul_, when accumulating); where the row is a depthwise term's kernel
   on the diagonal, the eager diagonal term adds the product (no fused multiply-add). */
static inline void mix_levels_row(const int8_t *restrict l, float s, float m, float *restrict out, int64_t size,
                                  int diagonal, int accumulate) {
    if (diagonal)
        for (int64_t i = 0; i < size; ++i) out[i] = out[i] + ((float)l[i] * s) * m;
    else if (accumulate)
        for (int64_t i = 0; i < size; ++i) out[i] = fmaf((float)l[i] * s, m, out[i]);
    else
        for (int64_t i = 0; i < size; ++i) out[i] = ((float)l[i] * s) * m;
}

/* An encoded term of the weight mix: its weight is levels[c, i] * scale[c] (scale_stride 0: one scale).
   mixed (+)= that * mask[c] (mix_levels_row); rows of `mixed` are row_stride apart (a depthwise term's
   kernels sit on the diagonal of a dense weight: (channels + 1) * size). */
void mix_levels_forward(const int8_t *restrict levels, const float *restrict scale, int64_t scale_stride,
                        const float *restrict mask, int64_t mask_stride, float *restrict mixed, int accumulate,
                        int64_t row_stride, int64_t channels, int64_t size) {
    for (int64_t c = 0; c < channels; ++c)
        mix_levels_row(levels + c * size, scale[c * scale_stride], mask[c * mask_stride], mixed + c * row_stride,
                       size, row_stride != size, accumulate);
}

/* An int term of the mix encoded and mixed row by row over the weight w [channels, size]: its levels as
   int8 (|levels| <= 127) under the int weight quantizer's scale, then mixed from them as
   mix_levels_forward mixes (while the row is in cache); the scale goes to *scale_out. */
void mix_int_forward(const float *restrict w, int8_t *restrict levels, float *restrict scale_out, float low,
                     float high, const float *restrict mask, int64_t mask_stride, float *restrict mixed,
                     int accumulate, int64_t row_stride, int64_t channels, int64_t size) {
    float scale = int_weight_scale(w, channels * size, high), inverse = 1.0f / scale;
    *scale_out = scale;
    for (int64_t c = 0; c < channels; ++c) {
        const float *row = w + c * size;
        int8_t *l = levels + c * size;
        for (int64_t i = 0; i < size; ++i) l[i] = (int8_t)clamp_level(rintf(row[i] * inverse), low, high);
        mix_levels_row(l, scale, mask[c * mask_stride], mixed + c * row_stride, size, row_stride != size,
                       accumulate);
    }
}

/* The backward of one encoded term of the mix, for the mixed weight's gradient g = factor * grad (rows
   row_stride apart; factor 1 leaves grad exact): grad_mask[c] = sum_i g * (levels * scale[c]) (as
   mix_dense_backward on the decoded term); the shared weight's gradient grad_weight = added + g * m[c]
   (largest NULL: the int quantizer's straight-through identity) or added + (g * m[c] * scale[c]) /
   largest[c] (the ternary quantizer's, as its eager backward), added NULL: no sum; grad_scale[c] =
   sum_i (g * m[c]) * levels (likewise). NULL outputs are skipped. grad_weight may be grad itself (each
   element read before it is written) or added: those three are not restrict. */
void levels_backward(const float *grad, int64_t row_stride, float factor, const int8_t *restrict levels,
                     const float *restrict scale, int64_t scale_stride, const float *restrict largest,
                     const float *restrict mask, int64_t mask_stride, float *grad_weight, const float *added,
                     float *restrict grad_mask, int64_t grad_mask_stride, float *restrict grad_scale,
                     int64_t channels, int64_t size) {
    float widened[BLOCK];
    int64_t vector_end = size - size % LANES;
    const vf factors = factor - (vf){0};
    for (int64_t c = 0; c < channels; ++c) {
        const float *g = grad + c * row_stride, *a = added ? added + c * size : 0;
        const int8_t *l = levels + c * size;
        float *gw = grad_weight ? grad_weight + c * size : 0;
        float s = scale[c * scale_stride], m = mask[c * mask_stride], top = largest ? largest[c] : 1.0f;
        vf dots = {0}, codes = {0}, ss = s - (vf){0}, ms = m - (vf){0}, tops = top - (vf){0};
        for (int64_t start = 0; start < vector_end; start += BLOCK) {
            int64_t stop = start + BLOCK < vector_end ? start + BLOCK : vector_end;
            widen_int8(l + start, widened, stop - start);
            for (int64_t i = start; i < stop; i += LANES) {
                vf gv = load(g + i) * factors, gm = gv * ms, level = load(widened + (i - start));
                dots += gv * (level * ss);
                codes += gm * level;
                if (gw) {
                    vf share = largest ? (gm * ss) / tops : gm;
                    store(gw + i, a ? load(a + i) + share : share);
                }
            }
        }
        double dot = 0.0, code = 0.0;
        for (int64_t i = vector_end; i < size; ++i) {
            float level = (float)l[i], gi = g[i] * factor, gm = gi * m;
            dot += gi * (level * s);
            code += gm * level;
            if (gw) {
                float share = largest ? (gm * s) / top : gm;
                gw[i] = a ? a[i] + share : share;
            }
        }
        for (int j = 0; j < LANES; ++j) {
            dot += dots[j];
            code += codes[j];
        }
        if (grad_mask) grad_mask[c * grad_mask_stride] = (float)dot;
        if (grad_scale) grad_scale[c] = (float)code;
    }
}

/* Thermometric mask of K = J + 1 units from increments[J, C] (exp of the assignment's alpha):
   theta[j, i] = sum_{l >= i} increments[j, l], accumulated from the end in a double and rounded to
   float at every position (as torch's float cumsum); open[j, i] = theta <= 0.5 (1.0 or 0.0); nested
   prefixes n_j = 1 - prod_{l <= j} open[l]; mask[i, :] = (n_0, n_1 - n_0, ..., 1 - n_{J-1}), row-major
   [C, K]. All of these but theta are 0 or 1, exactly as the eager ops compute them. */
void thermometric_mask(const float *restrict increments, int64_t boundaries, int64_t channels,
                       float *restrict open, float *restrict mask) {
    int64_t units = boundaries + 1;
    for (int64_t j = 0; j < boundaries; ++j) {
        double theta = 0.0;
        for (int64_t i = channels - 1; i >= 0; --i) {
            theta += increments[j * channels + i];
            open[j * channels + i] = (float)theta <= 0.5f ? 1.0f : 0.0f;
        }
    }
    for (int64_t i = 0; i < channels; ++i) {
        float closed_all = 1.0f, previous = 0.0f;
        for (int64_t j = 0; j < boundaries; ++j) {
            closed_all *= open[j * channels + i];
            float nested = 1.0f - closed_all;
            mask[i * units + j] = j ? nested - previous : nested;
            previous = nested;
        }
        mask[i * units + boundaries] = 1.0f - previous;
    }
}

/* Its backward: grad [C, K] (strides given) -> grad_alpha [J, C]. The columns' gradient reaches n_j as
   g_j - g_{j+1}; prefix j (straight-through to theta_j) gets the sum over l >= j of that times
   prod_{m <= l, m != j} open[m], in the eager backward's order of float operations; theta's reversed
   sum becomes a forward cumulative sum (double, rounded per position) times the increment. */
void thermometric_mask_backward(const float *restrict grad, int64_t row_stride, int64_t column_stride,
                                const float *restrict increments, const float *restrict open,
                                int64_t boundaries, int64_t channels, float *restrict grad_alpha) {
    for (int64_t j = 0; j < boundaries; ++j) {
        double total = 0.0;
        for (int64_t i = 0; i < channels; ++i) {
            const float *g = grad + i * row_stride;
            float prefix;
            if (boundaries == 1) {
                prefix = g[0] - g[column_stride];
            } else {
                float others = 1.0f;
                for (int64_t m = 0; m < j; ++m) others *= open[m * channels + i];
                prefix = (g[j * column_stride] - g[(j + 1) * column_stride]) * others;
                for (int64_t l = j + 1; l < boundaries; ++l) {
                    others = others * open[l * channels + i];
                    prefix = prefix + (g[l * column_stride] - g[(l + 1) * column_stride]) * others;
                }
            }
            total += prefix;
            grad_alpha[j * channels + i] = (float)total * increments[j * channels + i];
        }
    }
}
"""
