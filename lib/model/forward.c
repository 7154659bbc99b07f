/* model/forward.c - the one forward pass of a CLIP tower (inference is it without keeping
 * activations) and its one backward pass, over the batch layout, with the hook points of
 * model/clip.h. Shapes are noted as [rows, columns]. */
#include "model/clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cmr_clip_ws {
	const cmr_ops *ops;
	int tower, max_batch, max_rows, max_patch, keep, nlayers;
	int lean;        /* keeping, but no layer weight trains (prompts): h1, a, h2, fact not kept */
	int recompute;   /* lean, and only the residual stream kept (x_in, x_mid): q, k, v and fc1's
			  * output are recomputed in the backward pass */
	int kfrom, nk;   /* activations of layers kfrom.. are kept, in nk sets (1 when not keeping) */
	cmr_layout lay;  /* on the host */
	cmr_layout dlay; /* its copy in the backend's memory */
	int *hint, *dint;
	size_t nint;
	float *patches;  /* vision [B * np, 3 * P * P] */
	float *emb;      /* vision: the rows before pre_layrnorm [R, D] */
	float *x;        /* the residual stream: layer l's input is X(l) (nk + 1 slots when keeping) */
	float *h1, *q, *k, *v, *a, *xmid, *h2, *fpre, *fact; /* nk x [R, D] ([R, F] for f*) */
	float *tmp;      /* a block's output [R, D] */
	float *hs;       /* the layer hooks' scratch, nk x [R, hsz] */
	size_t hsz;
	int heads;       /* modules on the head (CMR_HOOK_HEAD) */
	float *hhs;      /* their scratch [R, hhsz] */
	size_t hhsz;
	float **tap, **dtap, **dpass; /* [layers]: the residual stream after layer l where a head
				       * module reads it, its gradient (keeping), and the gradients
				       * a backward pass asks for (those of the layers it walks) */
	float *pooled_h, *dpool_h; /* [B, D]: what the projection reads with head modules */
	float *scratch;  /* attention */
	float *pooled, *pooled_ln, *out; /* [B, D], [B, D], [B, proj] */
	float *dx, *dh, *dq, *dk, *dv, *da, *df, *df2, *dpool, *dpool_ln, *dout;
};

void cmr_clip_ws_free(cmr_clip_ws *ws)
{
	if (!ws)
		return;
	void *p[] = {ws->patches, ws->emb, ws->x, ws->h1, ws->q, ws->k, ws->v, ws->a, ws->xmid, ws->h2, ws->fpre,
		     ws->fact, ws->tmp, ws->hs, ws->scratch, ws->pooled, ws->pooled_ln, ws->out, ws->dx, ws->dh, ws->dq,
		     ws->dk, ws->dv, ws->da, ws->df, ws->df2, ws->dpool, ws->dpool_ln, ws->dout, ws->dint};
	for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
		if (p[i])
			ws->ops->free(p[i]);
	void *q[] = {ws->hhs, ws->pooled_h, ws->dpool_h};
	for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
		if (q[i])
			ws->ops->free(q[i]);
	for (int l = 0; ws->tap && l < ws->nlayers; l++) {
		if (ws->tap[l])
			ws->ops->free(ws->tap[l]);
		if (ws->dtap[l])
			ws->ops->free(ws->dtap[l]);
	}
	free(ws->tap);
	free(ws->hint);
	free(ws);
}

const cmr_layout *cmr_clip_ws_layout(const cmr_clip_ws *ws) { return &ws->lay; }

/* the layout's arrays at their offsets in an int block */
static void layout_bind(cmr_layout *l, int *base, int B, int R, int P)
{
	l->start = base, l->len = base + B, l->pool = base + 2 * B;
	l->tok = base + 3 * B, l->pos = l->tok + R, l->pre = l->pos + R, l->patch = l->pre + R, l->cls = l->patch + R;
	l->prow = l->cls + R;
	l->seg = l->prow + P;
}

cmr_clip_ws *cmr_clip_ws_new(const cmr_clip *m, const cmr_ops *ops, int tower, int max_batch, int max_tokens,
			     int keep)
{
	cmr_clip_ws *ws = calloc(1, sizeof *ws);
	if (!ws)
		return NULL;
	const cmr_clip_tower *t = &m->tower[tower];
	const cmr_tower_cfg *c = &t->cfg;
	int vision = tower == CMR_TOWER_VISION, L = c->layers;
	int seq = vision ? cmr_clip_vision_seq(c) + t->nprefix : c->context;
	ws->ops = ops;
	ws->tower = tower;
	ws->max_batch = max_batch;
	if (!cmr_clip_tower_trains(m, tower))
		keep = 0; /* a frozen tower keeps nothing */
	ws->keep = keep != 0;
	ws->max_rows = vision ? max_batch * seq : max_tokens + max_batch * t->nprefix;
	ws->max_patch = vision ? max_batch * cmr_clip_vision_patches(c) : 0;
	ws->kfrom = keep ? (t->grad_from < 0 ? 0 : t->grad_from > L ? L : t->grad_from) : L;
	ws->nk = keep && L - ws->kfrom > 0 ? L - ws->kfrom : 1;
	/* with every layer weight frozen and no module on the layers, the backward pass needs only
	 * what the layer norms, the attention and the activation's backward passes read (x_in, q,
	 * k, v, x_mid, fc1's output): the linear layers' inputs are kept for their weight
	 * gradients only; recomputing keeps x_in and x_mid alone */
	int wtrain = 0;
	for (int l = 0; l < L && t->layer; l++)
		for (int sl = 0; sl < CMR_L_PROMPT; sl++)
			wtrain |= t->layer[l].g[sl] != NULL;
	int layer_hooks = 0;
	for (const cmr_hook *h = t->hooks; h; h = h->next) {
		int head = h->point == CMR_HOOK_HEAD;
		layer_hooks |= !head;
		ws->heads |= head;
		*(head ? &ws->hhsz : &ws->hsz) += h->scratch;
	}
	/* modules on the head read the layers' outputs, not their activations: lean stays */
	ws->lean = keep && !wtrain && !layer_hooks;
	ws->recompute = ws->lean && keep == CMR_KEEP_RECOMPUTE;
	ws->nlayers = L;
	size_t R = (size_t)ws->max_rows, D = (size_t)c->width, F = (size_t)c->mlp, K = (size_t)ws->nk;
	size_t RD = R * D * sizeof(float), RF = R * F * sizeof(float), BD = (size_t)max_batch * D * sizeof(float);
	ws->nint = 3 * (size_t)max_batch + 6 * R + (size_t)ws->max_patch;
	ws->hint = malloc(ws->nint * sizeof(int));
	ws->tap = calloc(3 * (size_t)L + 1, sizeof *ws->tap);
	int ok = ws->hint && ws->tap;
	if (ws->tap)
		ws->dtap = ws->tap + L, ws->dpass = ws->tap + 2 * L;
#define ALLOC(f, bytes) ok &= ((ws->f = ops->alloc((bytes) + 4)) != NULL)
	ALLOC(dint, ws->nint * sizeof(int));
	ALLOC(x, (keep ? K + 1 : 1) * RD);
	size_t KL = ws->lean ? 1 : K; /* the sets of what lean leaves unkept */
	ALLOC(h1, KL * RD);
	size_t KR = ws->recompute ? 1 : K; /* the sets of what recomputing leaves unkept */
	ALLOC(q, KR * RD);
	ALLOC(k, KR * RD);
	ALLOC(v, KR * RD);
	ALLOC(a, KL * RD);
	ALLOC(h2, KL * RD);
	ALLOC(fpre, KR * RF);
	ALLOC(tmp, RD);
	ALLOC(scratch, 2 * (size_t)seq * seq * sizeof(float));
	ALLOC(pooled, BD);
	ALLOC(pooled_ln, BD);
	ALLOC(out, (size_t)max_batch * t->proj * sizeof(float));
	ALLOC(hs, K * R * ws->hsz * sizeof(float));
	if (ws->heads) {
		ALLOC(hhs, R * ws->hhsz * sizeof(float));
		ALLOC(pooled_h, BD);
		if (keep)
			ALLOC(dpool_h, BD);
		for (int l = 0; ok && l < L; l++) {
			int read = 0;
			for (const cmr_hook *h = t->hooks; h; h = h->next)
				read |= h->point == CMR_HOOK_HEAD && h->applies(h, l);
			if (read) {
				ALLOC(tap[l], RD);
				if (keep)
					ALLOC(dtap[l], RD);
			}
		}
	}
	if (keep) {
		ALLOC(xmid, K * RD);
		ALLOC(fact, KL * RF);
		ALLOC(dx, RD);
		ALLOC(dh, RD);
		ALLOC(dq, RD);
		ALLOC(dk, RD);
		ALLOC(dv, RD);
		ALLOC(da, RD);
		ALLOC(df, RF);
		ALLOC(df2, RF);
		ALLOC(dpool, BD);
		ALLOC(dpool_ln, BD);
		ALLOC(dout, (size_t)max_batch * t->proj * sizeof(float));
	}
	if (vision) {
		ALLOC(patches, (size_t)ws->max_patch * cmr_clip_patch_dim(c) * sizeof(float));
		ALLOC(emb, RD);
	}
#undef ALLOC
	if (!ok) {
		cmr_clip_ws_free(ws);
		return NULL;
	}
	layout_bind(&ws->lay, ws->hint, max_batch, (int)R, ws->max_patch);
	layout_bind(&ws->dlay, ws->dint, max_batch, (int)R, ws->max_patch);
	return ws;
}

/* ---- the layout ---- */
/* row i (0-based) of sample b's prefix: the row of the prefix table it takes, or -1 for a
 * selection outside the pool */
static int prefix_row(const cmr_clip_tower *t, const cmr_batch *in, int b, int i)
{
	if (t->prefix_len <= 0)
		return i;
	int j = i / t->prefix_len, sel = in && in->prefix_sel ? in->prefix_sel[(size_t)b * t->prefix_k + j] : j;
	int npool = t->prefix_table / t->prefix_len;
	return sel >= 0 && sel < npool ? sel * t->prefix_len + i % t->prefix_len : -1;
}

static int layout_images(const cmr_clip_tower *t, cmr_layout *lay, const cmr_batch *in, int max_rows)
{
	int B = in->B;
	/* a features tower has no class row: its rows are [prefix] [the feature row], pooled there */
	int cls = !t->cfg.features;
	int np = in->no_prefix ? 0 : t->nprefix, npatch = cmr_clip_vision_patches(&t->cfg), seq = cls + np + npatch;
	if (B * seq > max_rows)
		return -1;
	lay->B = B;
	lay->rows = B * seq;
	lay->npatch = B * npatch;
	for (int b = 0; b < B; b++) {
		int s = b * seq;
		lay->start[b] = s;
		lay->len[b] = seq;
		lay->pool[b] = cls ? s : s + np; /* the class token, or the feature row */
		for (int i = 0; i < seq; i++) {
			int r = s + i, j = i - cls - np; /* patch j of this image */
			int is_cls = cls && i == 0, is_pre = !is_cls && j < 0;
			lay->tok[r] = -1;
			/* class: position 0; prefix rows: none; patch j: position cls + j */
			lay->pos[r] = is_cls ? 0 : j < 0 ? -1 : cls + j;
			lay->pre[r] = is_pre ? prefix_row(t, in, b, i - cls) : -1;
			if (is_pre && lay->pre[r] < 0)
				return -1;
			lay->patch[r] = j >= 0 ? b * npatch + j : -1;
			lay->cls[r] = is_cls ? 0 : -1;
			lay->seg[r] = b;
			if (j >= 0)
				lay->prow[b * npatch + j] = r;
		}
	}
	return 0;
}

static int layout_texts(const cmr_clip_tower *t, cmr_layout *lay, const cmr_batch *in, int max_rows)
{
	const cmr_tower_cfg *c = &t->cfg;
	int rows = 0, np = in->no_prefix ? 0 : t->nprefix;
	lay->truncated = 0;
	for (int b = 0; b < in->B; b++) {
		int n = in->lens[b], full = n;
		if (n < 1 || n > c->context)
			return -1;
		if (n + np > c->context) { /* cut to fit the prompts, keeping the end token */
			n = c->context - np;
			lay->truncated++;
		}
		if (n < 2 && np && full >= 2)
			return -1;
		if (rows + n + np > max_rows)
			return -1;
		lay->start[b] = rows;
		lay->len[b] = n + np;
		int at = 0; /* the first occurrence of the largest id: the end token, as CLIP's argmax */
		for (int i = 0; i < full; i++) {
			int32_t id = in->ids[b][i];
			if (id < 0 || id >= c->vocab)
				return -1;
			if (id > in->ids[b][at])
				at = i;
		}
		int end = in->ids[b][at];
		if (at >= n) /* the end token was cut: it takes the last row kept */
			at = n - 1;
		for (int i = 0; i < n; i++) {
			int r = rows + (i ? i + np : 0); /* the start token, the prefix rows, the others */
			lay->tok[r] = i == at ? end : in->ids[b][i];
			lay->pos[r] = i ? i + np : 0;
			lay->pre[r] = -1;
		}
		for (int i = 1; i <= np; i++) {
			lay->tok[rows + i] = -1;
			lay->pos[rows + i] = i;
			if ((lay->pre[rows + i] = prefix_row(t, in, b, i - 1)) < 0)
				return -1;
		}
		for (int i = 0; i < n + np; i++) {
			lay->patch[rows + i] = lay->cls[rows + i] = -1;
			lay->seg[rows + i] = b;
		}
		lay->pool[b] = rows + (at ? at + np : 0);
		rows += n + np;
	}
	lay->B = in->B;
	lay->rows = rows;
	lay->npatch = 0;
	return 0;
}

/* the embedding rows x [rows, D]: [class; prefix; patches] + positions, or tokens +
 * positions, summed into zeros (so each sum is the one the plain model computes) */
static void embed(const cmr_clip_tower *t, const cmr_ops *ops, cmr_clip_ws *ws, const cmr_batch *in, float *x)
{
	const cmr_layout *dl = &ws->dlay;
	int D = t->cfg.width, R = ws->lay.rows;
	ops->zero(x, (size_t)R * D);
	if (t->kind == CMR_TOWER_VISION) {
		const cmr_tower_cfg *c = &t->cfg;
		int P = c->patch_size, K = cmr_clip_patch_dim(c);
		if (c->features) /* the feature vectors as given: one patch each */
			for (int b = 0; b < ws->lay.B; b++)
				ops->upload(ws->patches + (size_t)b * K, in->pixels[b], (size_t)K * sizeof(float));
		else
			ops->patchify(ws->patches, in->pixels, ws->lay.B, c->image_size, P, t->mean, t->std);
		/* patch embeddings [B * npatch, D] (the conv has no bias) */
		ops->linear(ws->patches, t->w[CMR_T_PATCH], NULL, ws->tmp, ws->lay.npatch, K, D);
		if (t->w[CMR_T_CLASS])
			ops->gather_add(x, t->w[CMR_T_CLASS], dl->cls, R, D);
		ops->gather_add(x, ws->tmp, dl->patch, R, D);
	} else {
		ops->gather_add(x, t->w[CMR_T_TOKEN], dl->tok, R, D);
	}
	if (t->nprefix)
		ops->gather_add(x, t->w[CMR_T_PREFIX], dl->pre, R, D);
	ops->gather_add(x, t->w[CMR_T_POS], dl->pos, R, D);
}

/* the activations of layer l: its kept set, or the shared one */
typedef struct {
	float *xin, *xout, *h1, *q, *k, *v, *a, *xmid, *h2, *fpre, *fact, *hs;
} acts;

static acts layer_acts(const cmr_clip_ws *ws, int l, int D, int F)
{
	size_t RD = (size_t)ws->max_rows * D, RF = (size_t)ws->max_rows * F;
	int kept = ws->keep && l >= ws->kfrom;
	size_t s = kept ? (size_t)(l - ws->kfrom) : 0, sl = ws->lean ? 0 : s, sr = ws->recompute ? 0 : s;
	acts A;
	A.xin = ws->x + (kept ? s : 0) * RD;
	A.xout = kept ? A.xin + RD : A.xin;
	A.h1 = ws->h1 + sl * RD;
	A.q = ws->q + sr * RD;
	A.k = ws->k + sr * RD;
	A.v = ws->v + sr * RD;
	A.a = ws->a + sl * RD;
	A.xmid = kept ? ws->xmid + s * RD : A.xin;
	A.h2 = ws->h2 + sl * RD;
	A.fpre = ws->fpre + sr * RF;
	A.fact = kept ? ws->fact + sl * RF : A.fpre;
	A.hs = ws->hs + s * (size_t)ws->max_rows * ws->hsz;
	return A;
}

/* the hooks at point in layer l: out += f(in) */
static void hooks_forward(const cmr_clip_tower *t, const cmr_ops *ops, const cmr_clip_ws *ws, int point, int l,
			  const float *in, float *out, float *hs)
{
	size_t off = 0;
	for (const cmr_hook *h = t->hooks; h; h = h->next) {
		if (h->point == CMR_HOOK_HEAD)
			continue; /* the head's scratch is its own */
		if (h->point == point && h->applies(h, l)) {
			cmr_hook_io io = {.ops = ops, .layer = l, .rows = ws->lay.rows, .width = t->cfg.width,
					  .in = in, .out = out, .scratch = hs + off * (size_t)ws->max_rows,
					  .lay = &ws->dlay, .layout_rows = ws->lay.rows};
			h->forward(h, &io);
		}
		off += h->scratch;
	}
}

/* whether a hook at point applies to layer l */
static int hooks_at(const cmr_clip_tower *t, int point, int l)
{
	for (const cmr_hook *h = t->hooks; h; h = h->next)
		if (h->point == point && h->applies(h, l))
			return 1;
	return 0;
}

static void hooks_backward(const cmr_clip_tower *t, const cmr_ops *ops, const cmr_clip_ws *ws, int point, int l,
			   const float *in, const float *dout, float *din, float *hs)
{
	size_t off = 0;
	for (const cmr_hook *h = t->hooks; h; h = h->next) {
		if (h->point == CMR_HOOK_HEAD)
			continue;
		if (h->point == point && h->applies(h, l)) {
			cmr_hook_io io = {.ops = ops, .layer = l, .rows = ws->lay.rows, .width = t->cfg.width,
					  .in = in, .dout = dout, .din = din, .scratch = hs + off * (size_t)ws->max_rows,
					  .lay = &ws->dlay, .layout_rows = ws->lay.rows};
			h->backward(h, &io);
		}
		off += h->scratch;
	}
}

/* the head's modules: forward (out = in + their sum) or backward (din += J^T dout, the
 * taps' gradients into dtaps) */
static void head_pass(const cmr_clip_tower *t, const cmr_ops *ops, const cmr_clip_ws *ws, int backward,
		      const float *in, float *out, const float *dout, float *din, float *const *dtaps)
{
	size_t off = 0;
	for (const cmr_hook *h = t->hooks; h; h = h->next) {
		if (h->point != CMR_HOOK_HEAD)
			continue;
		cmr_hook_io io = {.ops = ops, .layer = t->cfg.layers, .rows = ws->lay.B, .width = t->cfg.width,
				  .in = in, .out = out, .dout = dout, .din = din,
				  .scratch = ws->hhs + off * (size_t)ws->max_rows, .lay = &ws->dlay,
				  .taps = (const float *const *)ws->tap, .dtaps = dtaps, .att = ws->scratch,
				  .layout_rows = ws->lay.rows};
		(backward ? h->backward : h->forward)(h, &io);
		off += h->scratch;
	}
}

int cmr_clip_forward(const cmr_clip *m, int tower, const cmr_ops *ops, cmr_clip_ws *ws, const cmr_batch *in,
		     float *out)
{
	const cmr_clip_tower *t = &m->tower[tower];
	const cmr_tower_cfg *c = &t->cfg;
	int vision = tower == CMR_TOWER_VISION;
	/* a device backend reads the copies of a model placed on it (cmr_clip_place) */
	if (ws->tower != tower || ops != ws->ops || (!(ops->caps & CMR_OPS_HOST) && m->placed != ops) || in->B < 1 || in->B > ws->max_batch ||
	    !t->layer || !t->w[CMR_T_POS])
		return -1;
	if ((vision ? layout_images(t, &ws->lay, in, ws->max_rows) : layout_texts(t, &ws->lay, in, ws->max_rows)) < 0)
		return -1;
	const cmr_layout *lay = &ws->lay, *dl = &ws->dlay;
	ws->dlay.B = lay->B, ws->dlay.rows = lay->rows, ws->dlay.npatch = lay->npatch;
	ops->upload(ws->dint, ws->hint, ws->nint * sizeof(int));
	int D = c->width, F = c->mlp, H = c->heads, Dh = D / H, R = lay->rows, B = lay->B;
	float scale = 1.0f / sqrtf((float)Dh);
	size_t n = (size_t)R * D;
	acts A0 = layer_acts(ws, 0, D, F);
	if (vision) {
		embed(t, ops, ws, in, ws->emb);
		ops->layernorm(ws->emb, t->w[CMR_T_PRE_LN_W], t->w[CMR_T_PRE_LN_B], A0.xin, R, D, c->eps);
	} else {
		embed(t, ops, ws, in, A0.xin);
	}
	for (int l = 0; l < c->layers; l++) {
		const cmr_layer *L = &t->layer[l];
		acts A = layer_acts(ws, l, D, F);
		if (l > 0 && L->w[CMR_L_PROMPT]) /* deep prompts: this layer's own prefix rows */
			ops->set_rows(A.xin, L->w[CMR_L_PROMPT], dl->pre, R, D);
		ops->layernorm(A.xin, L->w[CMR_L_LN1_W], L->w[CMR_L_LN1_B], A.h1, R, D, c->eps);
		ops->linear(A.h1, L->w[CMR_L_Q_W], L->w[CMR_L_Q_B], A.q, R, D, D);
		ops->linear(A.h1, L->w[CMR_L_K_W], L->w[CMR_L_K_B], A.k, R, D, D);
		ops->linear(A.h1, L->w[CMR_L_V_W], L->w[CMR_L_V_B], A.v, R, D, D);
		if (t->hooks) {
			hooks_forward(t, ops, ws, CMR_HOOK_Q, l, A.h1, A.q, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_K, l, A.h1, A.k, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_V, l, A.h1, A.v, A.hs);
		}
		ops->scale(A.q, n, scale); /* HF scales the projected queries */
		ops->attention(A.q, A.k, A.v, A.a, B, dl->start, dl->len, H, Dh, !vision, ws->scratch);
		ops->linear(A.a, L->w[CMR_L_O_W], L->w[CMR_L_O_B], ws->tmp, R, D, D);
		if (t->hooks) {
			hooks_forward(t, ops, ws, CMR_HOOK_O, l, A.a, ws->tmp, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_ATTN_OUT, l, ws->tmp, ws->tmp, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_ATTN, l, A.h1, ws->tmp, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_RESID, l, A.xin, ws->tmp, A.hs);
		}
		ops->add(A.xmid, A.xin, ws->tmp, n);
		ops->layernorm(A.xmid, L->w[CMR_L_LN2_W], L->w[CMR_L_LN2_B], A.h2, R, D, c->eps);
		ops->linear(A.h2, L->w[CMR_L_FC1_W], L->w[CMR_L_FC1_B], A.fpre, R, D, F);
		if (A.fact != A.fpre)
			ops->copy(A.fact, A.fpre, (size_t)R * F);
		ops->act(A.fact, (size_t)R * F, c->act);
		ops->linear(A.fact, L->w[CMR_L_FC2_W], L->w[CMR_L_FC2_B], ws->tmp, R, F, D);
		if (t->hooks) {
			hooks_forward(t, ops, ws, CMR_HOOK_MLP_OUT, l, ws->tmp, ws->tmp, A.hs);
			hooks_forward(t, ops, ws, CMR_HOOK_MLP, l, A.h2, ws->tmp, A.hs);
		}
		ops->add(A.xout, A.xmid, ws->tmp, n);
		if (ws->tap[l]) /* a head module reads it (before the next layer's deep prompts) */
			ops->copy(ws->tap[l], A.xout, n);
	}
	/* the head: the pooled rows, their final layernorm, the projection */
	const float *x = layer_acts(ws, c->layers, D, F).xin;
	ops->gather(ws->pooled, x, dl->pool, B, D);
	ops->layernorm(ws->pooled, t->w[CMR_T_FINAL_LN_W], t->w[CMR_T_FINAL_LN_B], ws->pooled_ln, B, D, c->eps);
	if (in->state)
		ops->download(in->state, ws->pooled_ln, (size_t)B * D * sizeof(float));
	const float *head = ws->pooled_ln;
	if (ws->heads) {
		ops->copy(ws->pooled_h, ws->pooled_ln, (size_t)B * D);
		head_pass(t, ops, ws, 0, ws->pooled_ln, ws->pooled_h, NULL, NULL, NULL);
		head = ws->pooled_h;
	}
	ops->linear(head, t->w[CMR_T_PROJ], NULL, ws->out, B, D, t->proj);
	ops->download(out, ws->out, (size_t)B * t->proj * sizeof(float));
	return 0;
}

void cmr_clip_backward(const cmr_clip *m, int tower, const cmr_ops *ops, cmr_clip_ws *ws, const float *dout)
{
	const cmr_clip_tower *t = &m->tower[tower];
	const cmr_tower_cfg *c = &t->cfg;
	const cmr_layout *lay = &ws->lay, *dl = &ws->dlay;
	if (!ws->keep || ops != ws->ops || !cmr_clip_tower_trains(m, tower))
		return;
	int D = c->width, F = c->mlp, H = c->heads, Dh = D / H, R = lay->rows, B = lay->B, vision = tower == CMR_TOWER_VISION;
	float scale = 1.0f / sqrtf((float)Dh);
	size_t n = (size_t)R * D;
	int below = t->grad_from < c->layers; /* the layers are walked back */
	/* head */
	ops->upload(ws->dout, dout, (size_t)B * t->proj * sizeof(float));
	ops->zero(ws->dpool_ln, (size_t)B * D);
	ops->zero(ws->dpool, (size_t)B * D);
	int lowest = t->grad_from > 0 ? t->grad_from : 0;
	if (ws->heads) { /* the projection read pooled_ln + the modules' sum */
		ops->zero(ws->dpool_h, (size_t)B * D);
		ops->linear_bw(ws->pooled_h, t->w[CMR_T_PROJ], ws->dout, ws->dpool_h, t->g[CMR_T_PROJ], NULL, B, D,
			       t->proj);
		ops->copy(ws->dpool_ln, ws->dpool_h, (size_t)B * D);
		for (int l = 0; l < c->layers; l++) {
			ws->dpass[l] = below && l >= lowest ? ws->dtap[l] : NULL;
			if (ws->dpass[l])
				ops->zero(ws->dpass[l], n);
		}
		head_pass(t, ops, ws, 1, ws->pooled_ln, NULL, ws->dpool_h, ws->dpool_ln, ws->dpass);
	} else {
		ops->linear_bw(ws->pooled_ln, t->w[CMR_T_PROJ], ws->dout, ws->dpool_ln, t->g[CMR_T_PROJ], NULL, B, D,
			       t->proj);
	}
	ops->layernorm_bw(ws->pooled, t->w[CMR_T_FINAL_LN_W], ws->dpool_ln, below ? ws->dpool : NULL,
			  t->g[CMR_T_FINAL_LN_W], t->g[CMR_T_FINAL_LN_B], B, D, c->eps);
	if (!below)
		return;
	ops->zero(ws->dx, n);
	ops->scatter_add(ws->dx, ws->dpool, dl->pool, B, D);
	/* layers, last first; ws->dx is the gradient of the current layer's output */
	for (int l = c->layers - 1; l >= lowest; l--) {
		const cmr_layer *L = &t->layer[l];
		float *const *g = L->g;
		acts A = layer_acts(ws, l, D, F);
		if (ws->dpass[l]) /* what a head module read of this layer's output */
			ops->add(ws->dx, ws->dx, ws->dpass[l], n);
		int deep = l > 0 && L->w[CMR_L_PROMPT];
		int need_dxin = l > lowest || t->grad_from < 0 || (deep && g[CMR_L_PROMPT]);
		/* x_out = x_mid + fc2(act(fc1(ln2(x_mid)))) [+ MLP hooks(ln2(x_mid))] */
		ops->zero(ws->df, (size_t)R * F);
		ops->zero(ws->df2, (size_t)R * F);
		ops->zero(ws->dh, n);
		/* the gradient of fc2's output: dx, and through the module on it (da is free) */
		const float *dmlp = ws->dx;
		if (t->hooks && hooks_at(t, CMR_HOOK_MLP_OUT, l)) {
			ops->copy(ws->da, ws->dx, n);
			hooks_backward(t, ops, ws, CMR_HOOK_MLP_OUT, l, NULL, ws->dx, ws->da, A.hs);
			dmlp = ws->da;
		}
		ops->linear_bw(A.fact, L->w[CMR_L_FC2_W], dmlp, ws->df, g[CMR_L_FC2_W], g[CMR_L_FC2_B], R, F, D);
		if (ws->recompute) { /* fc1's output again, as the forward pass computed it */
			ops->layernorm(A.xmid, L->w[CMR_L_LN2_W], L->w[CMR_L_LN2_B], A.h2, R, D, c->eps);
			ops->linear(A.h2, L->w[CMR_L_FC1_W], L->w[CMR_L_FC1_B], A.fpre, R, D, F);
		}
		ops->act_bw(A.fpre, ws->df, ws->df2, (size_t)R * F, c->act);
		ops->linear_bw(A.h2, L->w[CMR_L_FC1_W], ws->df2, ws->dh, g[CMR_L_FC1_W], g[CMR_L_FC1_B], R, D, F);
		if (t->hooks)
			hooks_backward(t, ops, ws, CMR_HOOK_MLP, l, A.h2, ws->dx, ws->dh, A.hs);
		ops->layernorm_bw(A.xmid, L->w[CMR_L_LN2_W], ws->dh, ws->dx, g[CMR_L_LN2_W], g[CMR_L_LN2_B], R, D, c->eps);
		/* x_mid = x_in + out_proj(attention(q, k, v)) [+ hooks] */
		ops->zero(ws->da, n);
		ops->zero(ws->dq, n);
		ops->zero(ws->dk, n);
		ops->zero(ws->dv, n);
		const float *dattn = ws->dx; /* out_proj's output: dx, and through the module on it */
		if (t->hooks && hooks_at(t, CMR_HOOK_ATTN_OUT, l)) {
			ops->copy(ws->dk, ws->dx, n);
			hooks_backward(t, ops, ws, CMR_HOOK_ATTN_OUT, l, NULL, ws->dx, ws->dk, A.hs);
			dattn = ws->dk;
		}
		ops->linear_bw(A.a, L->w[CMR_L_O_W], dattn, ws->da, g[CMR_L_O_W], g[CMR_L_O_B], R, D, D);
		if (t->hooks)
			hooks_backward(t, ops, ws, CMR_HOOK_O, l, A.a, dattn, ws->da, A.hs);
		if (dattn == ws->dk)
			ops->zero(ws->dk, n);
		if (ws->recompute) { /* q, k and v again, as the forward pass computed them */
			ops->layernorm(A.xin, L->w[CMR_L_LN1_W], L->w[CMR_L_LN1_B], A.h1, R, D, c->eps);
			ops->linear(A.h1, L->w[CMR_L_Q_W], L->w[CMR_L_Q_B], A.q, R, D, D);
			ops->linear(A.h1, L->w[CMR_L_K_W], L->w[CMR_L_K_B], A.k, R, D, D);
			ops->linear(A.h1, L->w[CMR_L_V_W], L->w[CMR_L_V_B], A.v, R, D, D);
			ops->scale(A.q, n, scale);
		}
		ops->attention_bw(A.q, A.k, A.v, ws->da, ws->dq, ws->dk, ws->dv, B, dl->start, dl->len, H, Dh, !vision,
				  ws->scratch);
		ops->scale(ws->dq, n, scale);
		ops->zero(ws->dh, n);
		ops->linear_bw(A.h1, L->w[CMR_L_Q_W], ws->dq, ws->dh, g[CMR_L_Q_W], g[CMR_L_Q_B], R, D, D);
		ops->linear_bw(A.h1, L->w[CMR_L_K_W], ws->dk, ws->dh, g[CMR_L_K_W], g[CMR_L_K_B], R, D, D);
		ops->linear_bw(A.h1, L->w[CMR_L_V_W], ws->dv, ws->dh, g[CMR_L_V_W], g[CMR_L_V_B], R, D, D);
		if (t->hooks) {
			hooks_backward(t, ops, ws, CMR_HOOK_Q, l, A.h1, ws->dq, ws->dh, A.hs);
			hooks_backward(t, ops, ws, CMR_HOOK_K, l, A.h1, ws->dk, ws->dh, A.hs);
			hooks_backward(t, ops, ws, CMR_HOOK_V, l, A.h1, ws->dv, ws->dh, A.hs);
		}
		int resid = 0;
		if (t->hooks) {
			hooks_backward(t, ops, ws, CMR_HOOK_ATTN, l, A.h1, ws->dx, ws->dh, A.hs);
			for (const cmr_hook *h = t->hooks; h; h = h->next)
				resid |= h->point == CMR_HOOK_RESID && h->applies(h, l);
			if (resid) { /* da is free: the residual hooks' input gradient, added below */
				ops->zero(ws->da, n);
				hooks_backward(t, ops, ws, CMR_HOOK_RESID, l, A.xin, ws->dx, need_dxin ? ws->da : NULL, A.hs);
			}
		}
		ops->layernorm_bw(A.xin, L->w[CMR_L_LN1_W], ws->dh, need_dxin ? ws->dx : NULL, g[CMR_L_LN1_W],
				  g[CMR_L_LN1_B], R, D, c->eps);
		if (resid && need_dxin)
			ops->add(ws->dx, ws->dx, ws->da, n);
		if (deep && need_dxin) { /* the replaced rows: their gradient is the prompts', none below */
			if (g[CMR_L_PROMPT])
				ops->scatter_add(g[CMR_L_PROMPT], ws->dx, dl->pre, R, D);
			ops->set_rows(ws->dx, NULL, dl->pre, R, D);
		}
	}
	if (t->grad_from >= 0)
		return;
	/* embeddings: ws->dx is the gradient of the first layer's input */
	const float *de = ws->dx;
	if (vision) {
		ops->zero(ws->dh, n);
		ops->layernorm_bw(ws->emb, t->w[CMR_T_PRE_LN_W], ws->dx, ws->dh, t->g[CMR_T_PRE_LN_W], t->g[CMR_T_PRE_LN_B], R,
				  D, c->eps);
		de = ws->dh;
	}
	if (t->grad_from > CMR_DEPTH_EMBED)
		return;
	if (t->g[CMR_T_POS])
		ops->scatter_add(t->g[CMR_T_POS], de, dl->pos, R, D);
	if (t->g[CMR_T_TOKEN])
		ops->scatter_add(t->g[CMR_T_TOKEN], de, dl->tok, R, D);
	if (t->g[CMR_T_PREFIX])
		ops->scatter_add(t->g[CMR_T_PREFIX], de, dl->pre, R, D);
	if (t->g[CMR_T_CLASS])
		ops->scatter_add(t->g[CMR_T_CLASS], de, dl->cls, R, D);
	if (vision && t->g[CMR_T_PATCH]) { /* the patch rows packed into dq for the conv's backward pass */
		int K = cmr_clip_patch_dim(c);
		ops->gather(ws->dq, de, dl->prow, lay->npatch, D);
		ops->linear_bw(ws->patches, t->w[CMR_T_PATCH], ws->dq, NULL, t->g[CMR_T_PATCH], NULL, lay->npatch, K, D);
	}
}

int cmr_clip_ws_fit(const cmr_clip *m, const cmr_ops *ops, int tower, int max_batch, int tokens_per_sample, int keep)
{
	for (int b = max_batch / 2; b >= 1; b /= 2) {
		cmr_clip_ws *ws = cmr_clip_ws_new(m, ops, tower, b, b * tokens_per_sample, keep);
		if (ws) {
			cmr_clip_ws_free(ws);
			return b;
		}
	}
	return 0;
}

int cmr_clip_encode_images(const cmr_clip *m, const cmr_ops *ops, cmr_clip_ws *ws, const uint8_t *const *pixels,
			   int B, float *out)
{
	cmr_batch in = {.B = B, .pixels = pixels};
	return cmr_clip_forward(m, CMR_TOWER_VISION, ops, ws, &in, out);
}

int cmr_clip_encode_texts(const cmr_clip *m, const cmr_ops *ops, cmr_clip_ws *ws, const int32_t *const *ids,
			  const int *lens, int B, float *out)
{
	cmr_batch in = {.B = B, .ids = ids, .lens = lens};
	return cmr_clip_forward(m, CMR_TOWER_TEXT, ops, ws, &in, out);
}

double cmr_clip_flops(const cmr_clip_tower *t, int tokens)
{
	const cmr_tower_cfg *c = &t->cfg;
	double D = c->width, F = c->mlp, S = tokens;
	if (t->kind == CMR_TOWER_VISION)
		S = cmr_clip_vision_seq(c);
	double per_layer = S * (4 * D * D + 2 * D * F) + 2 * S * S * D;
	double f = c->layers * per_layer + D * t->proj;
	if (t->kind == CMR_TOWER_VISION)
		f += (double)cmr_clip_vision_patches(c) * cmr_clip_patch_dim(c) * D;
	return 2 * f; /* multiply-adds to floating-point operations */
}
