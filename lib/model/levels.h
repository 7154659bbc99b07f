/* model/levels.h - two modules on a tower's head (CMR_HOOK_HEAD, model/clip.h) that read
 * earlier layers of a frozen CLIP without changing its weights, each added to the pooled
 * state (after the final layer norm, before the projection) through a scalar gate that
 * starts at zero, so that the model's function is unchanged until they are trained
 * (MASAN's multi-level feature attention and cross-level interaction injection, issue 18):
 *
 *   levels  multi-level attention: the pooled rows of n layers, each through the tower's
 *           final layer norm (u_j), weighted by a learnt query q:
 *             a = softmax_j(q . u_j / sqrt(width)),  pooled += g * sum_j a_j u_j
 *           ("levels.<tower>.query" [width] from zero: the levels' mean at first;
 *           "levels.<tower>.gate" [1]);
 *   inject  cross-level injection: a one-head cross-attention of width r from the pooled
 *           state c to every row (patches, tokens) of the sample in each of n earlier layers,
 *           the rows through the final layer norm (U_j), one softmax per layer:
 *             o = sum_j softmax(Wq c . (Wk U_j)^T / sqrt(r)) (Wv U_j),  pooled += g * Wo o
 *           ("inject.<tower>.{q,k,v,o}.weight" [r, width] x 3 and [width, r], normal
 *           1/sqrt(fan-in); "inject.<tower>.gate" [1]).
 * The layers are spread evenly over the tower (cmr_levels_layers, cmr_inject_layers). Their
 * parameters are group adapter, tower k, no layer slot. */
#ifndef CMR_MODEL_LEVELS_H
#define CMR_MODEL_LEVELS_H

#include "model/clip.h"

#define CMR_LEVELS_MAX 16 /* layers a module reads */

typedef struct cmr_levels {
	cmr_hook hook;
	const cmr_clip *m;
	int tower, n, width;   /* width: inject's r */
	int inject;            /* 0: multi-level attention, 1: injection */
	int layer[CMR_LEVELS_MAX];
	int query, gate;       /* levels: parameter indices */
	int wq, wk, wv, wo;    /* inject */
} cmr_levels;

/* The n layers multi-level attention reads in a tower of L layers: spread evenly, the last
 * one included (n = 4 of 12: 2, 5, 8, 11); n is cut to L. Returns the count. */
int cmr_levels_layers(int L, int n, int *layer);
/* The n earlier layers injection reads: spread evenly, the last one left out (n = 2 of 12:
 * 3, 7); n is cut to L - 1. Returns the count (0 for a one-layer tower). */
int cmr_inject_layers(int L, int n, int *layer);

/* Adds the module's parameters to m's table (before values are loaded) and attaches it to the
 * tower's head; flags CMR_PARAM_TRAIN to train them (always optional in a checkpoint).
 * inject: 0 for multi-level attention over n levels, else injection from n layers with width
 * r (cut to the tower's width). Returns 0, or -1 with a message. */
int cmr_levels_add(cmr_clip *m, cmr_levels *a, int tower, int inject, int n, int r, unsigned flags, char *err,
		   size_t errlen);

#endif
