/* attention_internal.h: private to attention.c and attention_avx512.c: the AVX-512 kernels of
 * the blocked attention, which compute the same bits as attention.c's AVX2 ones. */
#ifndef KVPUB_ATTENTION_INTERNAL_H
#define KVPUB_ATTENTION_INTERNAL_H

#include "engine/ctx_internal.h"

#include <stddef.h>
#include <stdint.h>

/* One query against one key block, phase 0 (scores) or 1 (softmax and V product): the
 * contract of attention.c's blk_fn; head_dim a multiple of 16. */
void eng_att_blk_avx512(const float *q, const float *Kt, const float *Vb, int hd, int jend,
                        float scale, float *s, float *m, float *l, float *acc, int phase);
/* Phase 0 for two queries against the same key block, each with its own jend and scores:
 * the bits of two eng_att_blk_avx512 calls, with twice the FMA chains in flight. */
void eng_att_scores2_avx512(const float *qa, const float *qb, const float *Kt, int hd, int jend_a,
                            int jend_b, float scale, float *sa, float *sb);
/* Phase 1 for nq (1 or 2) queries against the same key block, sharing each load of V: V row j
 * at V + j * ldv, f32 or (f16 = 1) the f16 cache; query i has jend[i], scores s[i], running max
 * m[i], sum l[i] and accumulator acc[i]. The bits of separate eng_att_blk_avx512 calls. */
void eng_att_phase1x2_avx512(const void *V, size_t ldv, int f16, int hd, int nq, const int *jend,
                             float *const *s, float *const *m, float *const *l, float *const *acc);

/* Attention for np (1..ENG_ATT_LANES_MAX) query heads that share one kv head, query heads in
 * the lanes (16 per group): for a few queries (a short prompt after a long document), where
 * the blocked kernels would transpose every key block for too few queries. K and V: the kv
 * head's f16 rows, ld apart; query head i is q[i] (hd floats, hd a multiple of 16), sees
 * cells 0..cell[i] and writes out[i]. The bits of the blocked kernels. scr:
 * eng_att_lanes_scratch_floats(hd) floats. */
void eng_att_lanes_avx512(const uint16_t *K, const uint16_t *V, size_t ld, int hd, int np,
                          const float *const *q, const int *cell, float scale, float *const *out,
                          float *scr);
enum { ENG_ATT_LANES = 16, ENG_ATT_LANES_MAX = 4 * ENG_ATT_LANES };
static inline size_t eng_att_lanes_group_floats(int hd)
{
    return (2 * (size_t)hd + ENG_KEY_BLOCK) * ENG_ATT_LANES;
}
static inline size_t eng_att_lanes_scratch_floats(int hd)
{
    return ENG_KEY_BLOCK * (size_t)hd + ENG_ATT_LANES_MAX / ENG_ATT_LANES * eng_att_lanes_group_floats(hd) + 16;
}

#endif
