/* tflite/graph.c - runs a TFLite graph: checks every operator's operands once, owns the activations, calls the kernels in order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tflite/tflite.h"
#include "util.h"

struct cmr_tfl_run {
	const cmr_tfl_model *m;
	int fast;
	void **act;        /* per tensor: its activation buffer (NULL for constants) */
	int32_t **bias;    /* per operator: its bias, copied aligned, or NULL */
	double *scratch;
	int ran;
};

static int is_q8(const cmr_tfl_tensor *t) { return (t->type == TFL_UINT8 || t->type == TFL_INT8) && t->nq >= 1; }

/* a tensor as NHWC */
static cmr_qt view(const cmr_tfl_run *r, int i)
{
	const cmr_tfl_tensor *t = &r->m->t[i];
	cmr_qt q = {t->type, 1, 1, 1, 1, t->data ? (const void *)t->data : r->act[i], t->nq, t->scale, t->zero_point};
	if (t->rank == 4)
		q.n = t->shape[0], q.h = t->shape[1], q.w = t->shape[2], q.c = t->shape[3];
	else if (t->rank == 3)
		q.h = t->shape[0], q.w = t->shape[1], q.c = t->shape[2];
	else if (t->rank == 2)
		q.h = t->shape[0], q.c = t->shape[1];
	else if (t->rank == 1)
		q.c = t->shape[0];
	return q;
}

static int conv_out(int padding, int in, int k, int stride, int dil)
{
	int eff = (k - 1) * dil + 1;
	return padding == TFL_PAD_SAME ? (in + stride - 1) / stride : (in - eff + stride) / stride;
}

/* Checks operator i's operands; returns the scratch (doubles) it needs, or -1. */
static long long check_op(cmr_tfl_run *r, int i, const unsigned char *ready, char *err, size_t errlen)
{
	const cmr_tfl_model *m = r->m;
	const cmr_tfl_op *o = &m->op[i];
	const char *name = cmr_tfl_op_name(o->code);
	for (int k = 0; k < o->nin; k++)
		if (o->in[k] >= 0 && !ready[o->in[k]])
			return cmr_errf(err, errlen, "operator %d (%s): input %d (tensor %d) is neither a constant nor computed before",
				    i, name, k, o->in[k]);
	const cmr_tfl_tensor *T = m->t, *out = &T[o->out];
	if (out->data)
		return cmr_errf(err, errlen, "operator %d (%s) writes into a constant tensor", i, name);
	if (ready[o->out])
		return cmr_errf(err, errlen, "operator %d (%s) writes tensor %d a second time", i, name, o->out);
	int need = o->code == TFL_CONV_2D || o->code == TFL_DEPTHWISE_CONV_2D || o->code == TFL_FULLY_CONNECTED ? 2
		   : o->code == TFL_ADD || o->code == TFL_MEAN ? 2 : 1;
	if (o->nin < need || o->in[0] < 0 || (need == 2 && o->in[1] < 0))
		return cmr_errf(err, errlen, "operator %d (%s) has %d inputs, it needs %d", i, name, o->nin, need);
	const cmr_tfl_tensor *in = &T[o->in[0]];
	switch (o->code) {
	case TFL_QUANTIZE:
		if (!is_q8(out) || out->nq != 1 || (in->type != TFL_FLOAT32 && !(is_q8(in) && in->nq == 1)))
			return cmr_errf(err, errlen, "operator %d (QUANTIZE): %s to %s is not supported", i,
				    cmr_tfl_type_name(in->type), cmr_tfl_type_name(out->type));
		break;
	case TFL_DEQUANTIZE:
		if (!is_q8(in) || in->nq != 1 || out->type != TFL_FLOAT32)
			return cmr_errf(err, errlen, "operator %d (DEQUANTIZE): %s to %s is not supported", i,
				    cmr_tfl_type_name(in->type), cmr_tfl_type_name(out->type));
		break;
	default:
		if (!is_q8(in) || !is_q8(out) || in->nq != 1 || out->nq != 1)
			return cmr_errf(err, errlen, "operator %d (%s): input %s and output %s must be quantised uint8 or int8 "
				    "with one scale (float models are not supported)", i, name, cmr_tfl_type_name(in->type),
				    cmr_tfl_type_name(out->type));
		if (in->type != out->type && o->code != TFL_RESHAPE)
			return cmr_errf(err, errlen, "operator %d (%s) turns %s into %s", i, name, cmr_tfl_type_name(in->type),
				    cmr_tfl_type_name(out->type));
	}
	if (in->nelem == 0 || out->nelem == 0)
		return cmr_errf(err, errlen, "operator %d (%s): an empty tensor", i, name);
	long long scratch = 0;
	switch (o->code) {
	case TFL_CONV_2D:
	case TFL_DEPTHWISE_CONV_2D:
	case TFL_FULLY_CONNECTED: {
		const cmr_tfl_tensor *f = &T[o->in[1]];
		if (!f->data || !is_q8(f) || f->type != in->type)
			return cmr_errf(err, errlen, "operator %d (%s): the weights must be constant, quantised like the input", i,
				    name);
		int oc = o->code == TFL_DEPTHWISE_CONV_2D ? f->shape[f->rank - 1] : f->shape[0];
		int qdim = o->code == TFL_DEPTHWISE_CONV_2D ? f->rank - 1 : 0;
		if (f->nq > 1 && (f->qdim != qdim || f->nq != oc))
			return cmr_errf(err, errlen, "operator %d (%s): per-channel scales along dimension %d, expected %d", i, name,
				    f->qdim, qdim);
		if (o->nin > 2 && o->in[2] >= 0) {
			const cmr_tfl_tensor *b = &T[o->in[2]];
			if (!b->data || b->type != TFL_INT32 || b->nelem != (size_t)oc)
				return cmr_errf(err, errlen, "operator %d (%s): the bias must be a constant int32 [%d]", i, name, oc);
			if (!(r->bias[i] = malloc((size_t)oc * sizeof(int32_t))))
				return cmr_errf(err, errlen, "out of memory");
			memcpy(r->bias[i], b->data, (size_t)oc * sizeof(int32_t)); /* little-endian hosts only (Makefile) */
		}
		if (o->code == TFL_FULLY_CONNECTED) {
			if (f->rank != 2)
				return cmr_errf(err, errlen, "operator %d (FULLY_CONNECTED): weights of rank %d", i, f->rank);
			size_t K = (size_t)f->shape[1];
			if (in->nelem % K || out->nelem != in->nelem / K * (size_t)oc)
				return cmr_errf(err, errlen, "operator %d (FULLY_CONNECTED): input of %zu values for weights [%d,%zu] "
					    "and an output of %zu", i, in->nelem, oc, K, out->nelem);
			size_t M = in->nelem / K;
			scratch = (long long)(M * K + M * (size_t)oc + (size_t)oc * K);
			break;
		}
		if (in->rank != 4 || out->rank != 4 || f->rank != 4 || in->shape[0] != 1 || out->shape[0] != 1)
			return cmr_errf(err, errlen, "operator %d (%s): tensors of rank 4, batch 1 are supported", i, name);
		int kh = f->shape[1], kw = f->shape[2];
		int eh = conv_out(o->padding, in->shape[1], kh, o->stride_h, o->dil_h);
		int ew = conv_out(o->padding, in->shape[2], kw, o->stride_w, o->dil_w);
		if (eh != out->shape[1] || ew != out->shape[2] || oc != out->shape[3])
			return cmr_errf(err, errlen, "operator %d (%s): output [%d,%d,%d], the operands give [%d,%d,%d]", i, name,
				    out->shape[1], out->shape[2], out->shape[3], eh, ew, oc);
		if (o->code == TFL_CONV_2D) {
			if (f->shape[3] != in->shape[3])
				return cmr_errf(err, errlen, "operator %d (CONV_2D): filter of depth %d, input of %d", i, f->shape[3],
					    in->shape[3]);
			cmr_qt qi = view(r, o->in[0]), qf = view(r, o->in[1]), qo = view(r, o->out);
			scratch = (long long)cmr_tfl_conv_scratch(&qi, &qf, &qo);
		} else if (f->shape[0] != 1 || oc != in->shape[3] * o->depth_mult) {
			return cmr_errf(err, errlen, "operator %d (DEPTHWISE_CONV_2D): %d output channels for %d inputs x %d", i, oc,
				    in->shape[3], o->depth_mult);
		}
		break;
	}
	case TFL_ADD: {
		const cmr_tfl_tensor *b = &T[o->in[1]];
		if (!is_q8(b) || b->nq != 1 || b->type != in->type || b->nelem != in->nelem || out->nelem != in->nelem)
			return cmr_errf(err, errlen, "operator %d (ADD): operands of equal shape and type are supported", i);
		break;
	}
	case TFL_AVERAGE_POOL_2D:
		if (in->rank != 4 || out->rank != 4 || in->shape[0] != 1 || out->shape[3] != in->shape[3] || o->filter_w < 1 ||
		    o->filter_h < 1 ||
		    conv_out(o->padding, in->shape[1], o->filter_h, o->stride_h, 1) != out->shape[1] ||
		    conv_out(o->padding, in->shape[2], o->filter_w, o->stride_w, 1) != out->shape[2])
			return cmr_errf(err, errlen, "operator %d (AVERAGE_POOL_2D): the output shape does not follow", i);
		if (in->scale[0] != out->scale[0] || in->zero_point[0] != out->zero_point[0])
			return cmr_errf(err, errlen, "operator %d (AVERAGE_POOL_2D): input and output quantised differently", i);
		break;
	case TFL_MEAN: {
		const cmr_tfl_tensor *ax = &T[o->in[1]];
		int32_t a[2] = {0, 0};
		if (ax->data && ax->type == TFL_INT32 && ax->nelem == 2)
			memcpy(a, ax->data, sizeof a);
		if (in->rank != 4 || in->shape[0] != 1 || !((a[0] == 1 && a[1] == 2) || (a[0] == 2 && a[1] == 1)) ||
		    out->nelem != (size_t)in->shape[3])
			return cmr_errf(err, errlen, "operator %d (MEAN): only the mean over height and width of a [1,H,W,C] "
				    "tensor is supported", i);
		break;
	}
	case TFL_RESHAPE:
		if (in->nelem != out->nelem || in->type != out->type ||
		    (out->nq >= 1 && (in->scale[0] != out->scale[0] || in->zero_point[0] != out->zero_point[0])))
			return cmr_errf(err, errlen, "operator %d (RESHAPE): %zu values into %zu, or another quantisation", i,
				    in->nelem, out->nelem);
		break;
	case TFL_SOFTMAX:
		if (in->nelem != out->nelem || (in->rank && out->rank && in->shape[in->rank - 1] != out->shape[out->rank - 1]))
			return cmr_errf(err, errlen, "operator %d (SOFTMAX): the output's shape differs", i);
		break;
	case TFL_QUANTIZE:
	case TFL_DEQUANTIZE:
		if (in->nelem != out->nelem)
			return cmr_errf(err, errlen, "operator %d (%s): %zu values into %zu", i, name, in->nelem, out->nelem);
		break;
	}
	return scratch;
}

cmr_tfl_run *cmr_tfl_run_new(const cmr_tfl_model *m, int fast, char *err, size_t errlen)
{
	cmr_tfl_run *r = calloc(1, sizeof *r);
	unsigned char *ready = calloc((size_t)m->ntensors, 1);
	if (!r || !ready || !(r->act = calloc((size_t)m->ntensors, sizeof *r->act)) ||
	    !(r->bias = calloc((size_t)m->nops, sizeof *r->bias))) {
		free(ready);
		cmr_tfl_run_free(r);
		cmr_errf(err, errlen, "out of memory");
		return NULL;
	}
	r->m = m, r->fast = fast;
	const cmr_tfl_tensor *in = &m->t[m->input];
	if (in->data || in->rank != 4 || in->shape[0] != 1 || in->shape[3] != 3 ||
	    !(in->type == TFL_UINT8 || in->type == TFL_INT8 || in->type == TFL_FLOAT32)) {
		cmr_errf(err, errlen, "the input (%s) is %s of rank %d: an RGB image [1,H,W,3] of uint8, int8 or float32 is needed",
		     in->name, cmr_tfl_type_name(in->type), in->rank);
		goto bad;
	}
	if (in->type != TFL_FLOAT32 && in->nq != 1) {
		cmr_errf(err, errlen, "the input (%s) is not quantised with one scale", in->name);
		goto bad;
	}
	for (int t = 0; t < m->ntensors; t++)
		ready[t] = m->t[t].data != NULL;
	ready[m->input] = 1;
	long long most = 0;
	for (int i = 0; i < m->nops; i++) {
		long long s = check_op(r, i, ready, err, errlen);
		if (s < 0)
			goto bad;
		most = s > most ? s : most;
		ready[m->op[i].out] = 1;
	}
	if (!ready[m->output]) {
		cmr_errf(err, errlen, "the graph's output (tensor %d) is never computed", m->output);
		goto bad;
	}
	for (int t = 0; t < m->ntensors; t++)
		if (!m->t[t].data && ready[t] && !(r->act[t] = calloc(m->t[t].nbytes ? m->t[t].nbytes : 1, 1))) {
			cmr_errf(err, errlen, "out of memory");
			goto bad;
		}
	if (fast && most && !(r->scratch = malloc((size_t)most * sizeof *r->scratch))) {
		cmr_errf(err, errlen, "out of memory for %lld doubles of work space", most);
		goto bad;
	}
	free(ready);
	return r;
bad:
	free(ready);
	cmr_tfl_run_free(r);
	return NULL;
}

void cmr_tfl_run_free(cmr_tfl_run *r)
{
	if (!r)
		return;
	if (r->act)
		for (int t = 0; t < r->m->ntensors; t++)
			free(r->act[t]);
	if (r->bias)
		for (int i = 0; i < r->m->nops; i++)
			free(r->bias[i]);
	free(r->act), free(r->bias), free(r->scratch);
	free(r);
}

double cmr_tfl_macs(const cmr_tfl_model *m)
{
	double macs = 0;
	for (int i = 0; i < m->nops; i++) {
		const cmr_tfl_op *o = &m->op[i];
		if (o->nin < 2 || o->in[1] < 0)
			continue;
		const cmr_tfl_tensor *f = &m->t[o->in[1]];
		double out = (double)m->t[o->out].nelem;
		if (o->code == TFL_CONV_2D && f->rank == 4)
			macs += out * f->shape[1] * f->shape[2] * f->shape[3];
		else if (o->code == TFL_DEPTHWISE_CONV_2D && f->rank == 4)
			macs += out * f->shape[1] * f->shape[2];
		else if (o->code == TFL_FULLY_CONNECTED && f->rank == 2)
			macs += out * f->shape[1];
	}
	return macs;
}

void cmr_tfl_input_size(const cmr_tfl_model *m, int *h, int *w)
{
	*h = m->t[m->input].shape[1];
	*w = m->t[m->input].shape[2];
}

int cmr_tfl_invoke(cmr_tfl_run *r, const uint8_t *rgb, char *err, size_t errlen)
{
	const cmr_tfl_model *m = r->m;
	const cmr_tfl_tensor *it = &m->t[m->input];
	size_t n = it->nelem;
	if (it->type == TFL_UINT8)
		memcpy(r->act[m->input], rgb, n);
	else if (it->type == TFL_INT8)
		for (size_t i = 0; i < n; i++)
			((int8_t *)r->act[m->input])[i] = (int8_t)(rgb[i] - 128);
	else
		for (size_t i = 0; i < n; i++)
			((float *)r->act[m->input])[i] = ((float)rgb[i] - 127.5f) / 127.5f;
	for (int i = 0; i < m->nops; i++) {
		const cmr_tfl_op *o = &m->op[i];
		cmr_qt in = view(r, o->in[0]), out = view(r, o->out);
		char e[512];
		int rc = 0;
		switch (o->code) {
		case TFL_CONV_2D: {
			cmr_qt f = view(r, o->in[1]);
			rc = cmr_tfl_conv(o, &in, &f, r->bias[i], &out, r->fast, r->scratch, e, sizeof e);
			break;
		}
		case TFL_FULLY_CONNECTED: {
			cmr_qt f = view(r, o->in[1]);
			int K = f.c;
			cmr_tfl_op fc = *o;
			fc.padding = TFL_PAD_VALID, fc.stride_w = fc.stride_h = fc.dil_w = fc.dil_h = 1;
			in.n = 1, in.h = (int)(m->t[o->in[0]].nelem / (size_t)K), in.w = 1, in.c = K;
			f.n = f.h, f.h = 1, f.w = 1; /* [N, K] as [N,1,1,K] */
			out.n = 1, out.h = in.h, out.w = 1, out.c = f.n;
			rc = cmr_tfl_conv(&fc, &in, &f, r->bias[i], &out, r->fast, r->scratch, e, sizeof e);
			break;
		}
		case TFL_DEPTHWISE_CONV_2D: {
			cmr_qt f = view(r, o->in[1]);
			rc = cmr_tfl_depthwise(o, &in, &f, r->bias[i], &out, r->fast, e, sizeof e);
			break;
		}
		case TFL_ADD: {
			cmr_qt b = view(r, o->in[1]);
			rc = cmr_tfl_add(o, &in, &b, &out, e, sizeof e);
			break;
		}
		case TFL_AVERAGE_POOL_2D: rc = cmr_tfl_avgpool(o, &in, &out, e, sizeof e); break;
		case TFL_MEAN:
			out.n = out.h = out.w = 1, out.c = in.c;
			rc = cmr_tfl_mean_hw(&in, &out, e, sizeof e);
			break;
		case TFL_RESHAPE: memcpy(r->act[o->out], in.data, m->t[o->out].nbytes); break;
		case TFL_SOFTMAX: {
			int C = m->t[o->out].rank ? m->t[o->out].shape[m->t[o->out].rank - 1] : 1;
			in.n = in.h = 1, in.w = (int)(m->t[o->in[0]].nelem / (size_t)C), in.c = C;
			out.n = out.h = 1, out.w = in.w, out.c = C;
			rc = cmr_tfl_softmax(o->beta, &in, &out, e, sizeof e);
			break;
		}
		case TFL_QUANTIZE:
			if (m->t[o->in[0]].type == TFL_FLOAT32)
				cmr_tfl_quantize_f32(in.data, m->t[o->in[0]].nelem, &out);
			else
				rc = cmr_tfl_requantize(&in, &out, e, sizeof e);
			break;
		case TFL_DEQUANTIZE: cmr_tfl_dequantize(&in, m->t[o->in[0]].nelem, r->act[o->out]); break;
		}
		if (rc < 0)
			return cmr_errf(err, errlen, "operator %d: %s", i, e);
	}
	r->ran = 1;
	return 0;
}

int cmr_tfl_read(const cmr_tfl_run *r, int tensor, float *out)
{
	if (!r->ran || tensor < 0 || tensor >= r->m->ntensors || !r->act[tensor])
		return -1;
	const cmr_tfl_tensor *t = &r->m->t[tensor];
	if (t->type == TFL_FLOAT32) {
		memcpy(out, r->act[tensor], t->nelem * sizeof *out);
		return 0;
	}
	if ((t->type != TFL_UINT8 && t->type != TFL_INT8) || t->nq != 1)
		return -1;
	cmr_qt q = view(r, tensor);
	cmr_tfl_dequantize(&q, t->nelem, out);
	return 0;
}
