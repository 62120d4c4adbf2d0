/* bench_quant.c: single-threaded eng_matvec throughput per weight type, in weight bytes per
 * second, for the decode path's 3072x1024 and 1024x3072 shapes (Qwen3-0.6B's FFN). "cold"
 * rotates over copies totalling 256 MB so weights come from DRAM, as in a real decode step;
 * "hot" repeats one matrix (it fits in L3 for the smaller types). Time is the thread's CPU
 * time, so that other processes on a shared machine do not count (their memory traffic still
 * does).
 * --dequant measures instead the prefill's weight conversion: rows into 16-row GEMM panels
 * (eng_dequant_row_panel, or a row dequantized and then scattered where a type has no panel
 * kernel, as forward.c does), in Gweights (floats written) per second.
 * usage: bench_quant [--scalar] [--dequant] [--type NAME]... [seconds per figure, default 0.3]
 * (--type, repeatable: only those types, e.g. to compare a pair side by side) */
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/kernels/quant_blocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { PANEL_ROWS = 16 }; /* rows per panel: row r's 8-float groups at r * 8 + k / 8 * stride */

/* Rows [0, rows) of one matrix into a panel buffer (pan: PANEL_ROWS * cols floats, row: cols). */
static void dequant_matrix(uint32_t type, const uint8_t *W, size_t rb, int64_t rows, int64_t cols,
                           float *pan, float *row)
{
    const size_t stride = 8 * PANEL_ROWS;
    for (int64_t r = 0; r < rows; r++) {
        float *at = pan + (size_t)(r % PANEL_ROWS) * 8;
        const uint8_t *w = W + (size_t)r * rb;
        if (eng_dequant_row_panel(type, w, at, cols, stride))
            continue;
        eng_dequant_row(type, w, row, cols);
        for (int64_t k = 0; k < cols; k += 8)
            memcpy(at + (size_t)(k / 8) * stride, row + k, 8 * sizeof(float));
    }
}

/* Returns GB/s of weights streamed by matvecs (panel dequantizations where pan is not NULL:
 * G floats written per second) over ncopy copies (ncopy = 1: hot). */
static double run(uint32_t type, const uint8_t *W, size_t mat_bytes, size_t ncopy, size_t rb,
                  int64_t rows, int64_t cols, const float *x, float *y, float *pan, double secs)
{
    size_t iters = 0;
    double t0 = now(), t;
    do {
        for (size_t c = 0; c < ncopy; c++) {
            if (pan)
                dequant_matrix(type, W + c * mat_bytes, rb, rows, cols, pan, y);
            else
                eng_matvec(type, W + c * mat_bytes, rb, cols, x, y, 0, rows);
        }
        iters += ncopy;
        t = now() - t0;
    } while (t < secs);
    return (double)iters * (pan ? (double)(rows * cols) : (double)mat_bytes) / t / 1e9;
}

int main(int argc, char **argv)
{
    double secs = 0.3;
    const char *only[32];
    int nonly = 0, deq = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scalar"))
            eng_quant_force_scalar(1);
        else if (!strcmp(argv[i], "--dequant"))
            deq = 1;
        else if (!strcmp(argv[i], "--type") && i + 1 < argc && nonly < 32)
            only[nonly++] = argv[++i];
        else
            secs = atof(argv[i]);
    }
    static const uint32_t types[] = {GGML_T_F32, GGML_T_F16, GGML_T_BF16, GGML_T_Q8_0,
                                     GGML_T_Q4_0, GGML_T_Q4_K, GGML_T_Q6_K, GGML_T_Q4_1,
                                     GGML_T_Q5_0, GGML_T_Q5_1, GGML_T_Q2_K, GGML_T_Q3_K,
                                     GGML_T_Q5_K};
    static const int64_t shapes[2][2] = {{3072, 1024}, {1024, 3072}};
    const size_t cold_total = (size_t)256 << 20;
    printf("kernels: %s; %s per second of thread CPU time\n", eng_quant_kernels(),
           deq ? "G weights dequantized into panels" : "GB/s of weights");
    printf("%-5s  %-22s  %-22s\n", "type", "3072x1024 cold / hot", "1024x3072 cold / hot");
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint32_t type = types[t];
        const char *name = "?";
        ggml_type_traits(type, NULL, NULL, &name);
        int want = !nonly;
        for (int k = 0; k < nonly; k++)
            want |= !strcmp(only[k], name);
        if (!want)
            continue;
        printf("%-5s", name);
        double call_us = 0;
        for (int s = 0; s < 2; s++) {
            int64_t rows = shapes[s][0], cols = shapes[s][1];
            size_t rb = ggml_row_bytes(type, (uint64_t)cols), mat = rb * (size_t)rows;
            size_t ncopy = (cold_total + mat - 1) / mat;
            uint8_t *W = malloc(mat * ncopy);
            float *x = malloc(sizeof(float) * (size_t)cols), *w = malloc(sizeof(float) * (size_t)cols);
            /* y doubles as the dequantized row; pan is the panel of --dequant */
            float *y = malloc(sizeof(float) * (size_t)(rows > cols ? rows : cols));
            float *pan = malloc(sizeof(float) * PANEL_ROWS * (size_t)cols);
            if (!W || !x || !w || !y || !pan) {
                fprintf(stderr, "bench_quant: out of memory\n");
                return 2;
            }
            uint64_t st = 12345;
            for (int64_t i = 0; i < cols; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                x[i] = (float)((double)(st >> 11) * 0x1p-53 - 0.5);
            }
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t i = 0; i < cols; i++) {
                    st = st * 6364136223846793005ull + 1442695040888963407ull;
                    w[i] = (float)((double)(st >> 11) * 0x1p-53 - 0.5) * 0.05f;
                }
                if (eng_quantize_row(type, w, W + (size_t)r * rb, cols) != rb) {
                    fprintf(stderr, "bench_quant: cannot quantize to %s\n", name);
                    return 2;
                }
            }
            for (size_t c = 1; c < ncopy; c++)
                memcpy(W + c * mat, W, mat);
            if (s == 1) { /* one row: what each call costs besides the weights (x to Q8) */
                double t0 = now();
                for (int k = 0; k < 2000; k++)
                    eng_matvec(type, W, rb, cols, x, y, 0, 1);
                call_us = (now() - t0) / 2000 * 1e6;
            }
            float *p = deq ? pan : NULL;
            double cold = run(type, W, mat, ncopy, rb, rows, cols, x, y, p, secs);
            double hot = run(type, W, mat, 1, rb, rows, cols, x, y, p, secs);
            printf("  %7.2f / %7.2f       ", cold, hot);
            fflush(stdout);
            free(W);
            free(x);
            free(w);
            free(y);
            free(pan);
        }
        if (deq)
            printf("\n");
        else
            printf("  1x3072 call %.2f us\n", call_us);
    }
    return 0;
}
