/* tflite/tflite.c - the TensorFlow Lite flatbuffer reader: every offset checked, only the subset the interpreter runs.
 *
 * A flatbuffer is a tree of tables reached through 32-bit offsets (FlatBuffers' "internals"
 * documentation; field numbers from TensorFlow's lite/schema/schema.fbs): the file starts with
 * the root table's offset and the identifier "TFL3"; a table starts with a signed offset back to
 * its vtable (u16 vtable size, u16 table size, then one u16 per field: its offset in the table,
 * 0 when absent); a vector or string field holds an offset to a u32 length and the elements. No
 * C flatbuffers library is packaged by Debian, and the reader needs a few dozen lines of it. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "tflite/tflite.h"

#define TFL_FILE_MAX ((size_t)1 << 31) /* 2 GiB: buffers beyond need the offset form, not read here */
#define TFL_TENSORS_MAX 100000
#define TFL_OPS_MAX 100000

typedef struct {
	const uint8_t *b;
	size_t n;
	char *err;
	size_t errlen;
} fb;

static int fail(fb *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->err, f->errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* A table at pos: checks its vtable. Returns 0 or -1. */
static int table_ok(fb *f, size_t pos, size_t *vt, size_t *vtlen, size_t *tlen)
{
	if (pos > f->n || f->n - pos < 4)
		return fail(f, "a table at offset %zu lies outside the file", pos);
	int32_t so = (int32_t)rd32(f->b + pos);
	int64_t v = (int64_t)pos - so;
	if (v < 0 || (uint64_t)v > f->n || f->n - (size_t)v < 4)
		return fail(f, "the vtable of the table at offset %zu lies outside the file", pos);
	*vt = (size_t)v;
	*vtlen = rd16(f->b + *vt);
	*tlen = rd16(f->b + *vt + 2);
	if (*vtlen < 4 || *vtlen % 2 || f->n - *vt < *vtlen)
		return fail(f, "the vtable at offset %zu has a bad size %zu", *vt, *vtlen);
	if (*tlen < 4 || f->n - pos < *tlen)
		return fail(f, "the table at offset %zu (%zu bytes) runs past the file", pos, *tlen);
	return 0;
}

/* The position of field id of the table at pos with at least size bytes, or 0 when absent. -1 on error. */
static int64_t field(fb *f, size_t pos, int id, size_t size)
{
	size_t vt = 0, vtlen = 0, tlen = 0;
	if (table_ok(f, pos, &vt, &vtlen, &tlen) < 0)
		return -1;
	size_t slot = 4 + 2 * (size_t)id;
	if (slot + 2 > vtlen)
		return 0;
	size_t off = rd16(f->b + vt + slot);
	if (!off)
		return 0;
	if (off + size > tlen)
		return fail(f, "field %d of the table at offset %zu runs past the table", id, pos);
	return (int64_t)(pos + off);
}

static int get_u32(fb *f, size_t pos, int id, uint32_t def, uint32_t *out)
{
	int64_t p = field(f, pos, id, 4);
	if (p < 0)
		return -1;
	*out = p ? rd32(f->b + p) : def;
	return 0;
}

static int get_i32(fb *f, size_t pos, int id, int32_t def, int32_t *out)
{
	uint32_t u;
	if (get_u32(f, pos, id, (uint32_t)def, &u) < 0)
		return -1;
	*out = (int32_t)u;
	return 0;
}

static int get_u8(fb *f, size_t pos, int id, uint8_t def, uint8_t *out)
{
	int64_t p = field(f, pos, id, 1);
	if (p < 0)
		return -1;
	*out = p ? f->b[p] : def;
	return 0;
}

static int get_f32(fb *f, size_t pos, int id, float def, float *out)
{
	uint32_t u;
	memcpy(&u, &def, 4);
	if (get_u32(f, pos, id, u, &u) < 0)
		return -1;
	memcpy(out, &u, 4);
	return 0;
}

/* An offset field (table, vector or string): *to = its target, 0 when absent. */
static int get_ref(fb *f, size_t pos, int id, size_t *to)
{
	int64_t p = field(f, pos, id, 4);
	if (p < 0)
		return -1;
	if (!p) {
		*to = 0;
		return 0;
	}
	uint64_t t = (uint64_t)p + rd32(f->b + p);
	if (t >= f->n)
		return fail(f, "field %d of the table at offset %zu points outside the file", id, pos);
	*to = (size_t)t;
	return 0;
}

/* A vector field of elements of esize bytes: *data its first element, *len its length (0, NULL when absent). */
static int get_vec(fb *f, size_t pos, int id, size_t esize, const uint8_t **data, size_t *len)
{
	size_t v;
	*data = NULL, *len = 0;
	if (get_ref(f, pos, id, &v) < 0)
		return -1;
	if (!v)
		return 0;
	if (f->n - v < 4)
		return fail(f, "a vector at offset %zu lies outside the file", v);
	uint64_t n = rd32(f->b + v);
	if (n > (f->n - v - 4) / esize)
		return fail(f, "a vector at offset %zu of %llu elements runs past the file", v, (unsigned long long)n);
	*data = f->b + v + 4;
	*len = (size_t)n;
	return 0;
}

/* The i-th table of a vector of tables. */
static int vec_table(fb *f, const uint8_t *vec, size_t i, size_t *pos)
{
	size_t at = (size_t)(vec - f->b) + 4 * i;
	uint64_t t = (uint64_t)at + rd32(vec + 4 * i);
	if (t >= f->n)
		return fail(f, "a table reference at offset %zu points outside the file", at);
	*pos = (size_t)t;
	return 0;
}

static int get_str(fb *f, size_t pos, int id, char *out, size_t cap)
{
	const uint8_t *s;
	size_t n;
	out[0] = 0;
	if (get_vec(f, pos, id, 1, &s, &n) < 0)
		return -1;
	size_t k = 0;
	for (size_t i = 0; i < n && k + 1 < cap; i++) /* printable ASCII only: a name goes into messages */
		out[k++] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
	out[k] = 0;
	return 0;
}

/* ---- names ---- */
const char *cmr_tfl_op_name(int code)
{
	switch (code) {
	case TFL_ADD: return "ADD";
	case TFL_AVERAGE_POOL_2D: return "AVERAGE_POOL_2D";
	case TFL_CONV_2D: return "CONV_2D";
	case TFL_DEPTHWISE_CONV_2D: return "DEPTHWISE_CONV_2D";
	case TFL_DEQUANTIZE: return "DEQUANTIZE";
	case TFL_FULLY_CONNECTED: return "FULLY_CONNECTED";
	case TFL_RESHAPE: return "RESHAPE";
	case TFL_SOFTMAX: return "SOFTMAX";
	case TFL_MEAN: return "MEAN";
	case TFL_QUANTIZE: return "QUANTIZE";
	/* a few common ones, so that the refusal names them */
	case 2: return "CONCATENATION";
	case 14: return "LOGISTIC";
	case 17: return "MAX_POOL_2D";
	case 18: return "MUL";
	case 19: return "RELU";
	case 21: return "RELU6";
	case 23: return "RESIZE_BILINEAR";
	case 28: return "TANH";
	case 34: return "PAD";
	case 41: return "SUB";
	case 117: return "HARD_SWISH";
	default: return NULL;
	}
}

const char *cmr_tfl_type_name(int type)
{
	static const char *names[] = {"FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
				      "COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT",
				      "UINT32", "UINT16", "INT4"};
	return type >= 0 && type < (int)(sizeof names / sizeof *names) ? names[type] : "unknown";
}

static size_t type_size(int type)
{
	switch (type) {
	case TFL_FLOAT32: case TFL_INT32: return 4;
	case TFL_UINT8: case TFL_INT8: return 1;
	case TFL_INT64: return 8;
	default: return 0;
	}
}

int cmr_tfl_sniff(const void *buf, size_t n)
{
	return n >= 8 && memcmp((const uint8_t *)buf + 4, "TFL3", 4) == 0;
}

/* ---- tensors ---- */
static int read_quant(fb *f, size_t q, cmr_tfl_tensor *t, int idx)
{
	const uint8_t *sc, *zp;
	size_t nsc, nzp;
	int32_t qdim;
	uint8_t details;
	if (get_vec(f, q, 2, 4, &sc, &nsc) < 0 || get_vec(f, q, 3, 8, &zp, &nzp) < 0 ||
	    get_u8(f, q, 4, 0, &details) < 0 || get_i32(f, q, 6, 0, &qdim) < 0)
		return -1;
	if (details)
		return fail(f, "tensor %d (%s): custom quantisation details are not supported", idx, t->name);
	if (!nsc && !nzp)
		return 0; /* min/max only, or nothing: not quantised */
	if (nsc != nzp)
		return fail(f, "tensor %d (%s): %zu scales but %zu zero points", idx, t->name, nsc, nzp);
	if (nsc > 1 && (qdim < 0 || qdim >= t->rank || (size_t)t->shape[qdim] != nsc))
		return fail(f, "tensor %d (%s): %zu per-channel scales do not match dimension %d", idx, t->name, nsc, qdim);
	t->nq = (int)nsc, t->qdim = qdim;
	t->scale = malloc(nsc * sizeof *t->scale);
	t->zero_point = malloc(nsc * sizeof *t->zero_point);
	if (!t->scale || !t->zero_point)
		return fail(f, "out of memory");
	for (size_t i = 0; i < nsc; i++) {
		uint32_t u = rd32(sc + 4 * i);
		float s;
		memcpy(&s, &u, 4);
		int64_t z = (int64_t)((uint64_t)rd32(zp + 8 * i) | (uint64_t)rd32(zp + 8 * i + 4) << 32);
		if (!(s > 0) || !isfinite(s))
			return fail(f, "tensor %d (%s): scale %zu is %g, not a positive number", idx, t->name, i, s);
		int64_t lo = t->type == TFL_UINT8 ? 0 : t->type == TFL_INT8 ? -128 : INT32_MIN;
		int64_t hi = t->type == TFL_UINT8 ? 255 : t->type == TFL_INT8 ? 127 : INT32_MAX;
		if (z < lo || z > hi)
			return fail(f, "tensor %d (%s): zero point %lld is outside its type %s", idx, t->name, (long long)z,
				    cmr_tfl_type_name(t->type));
		t->scale[i] = s, t->zero_point[i] = (int32_t)z;
	}
	return 0;
}

static int read_tensor(fb *f, size_t pos, int idx, const uint8_t *bufs, size_t nbufs, cmr_tfl_tensor *t)
{
	const uint8_t *shape;
	size_t rank, q;
	uint8_t type;
	uint32_t buffer;
	if (get_str(f, pos, 3, t->name, sizeof t->name) < 0 || get_vec(f, pos, 0, 4, &shape, &rank) < 0 ||
	    get_u8(f, pos, 1, 0, &type) < 0 || get_u32(f, pos, 2, 0, &buffer) < 0 || get_ref(f, pos, 4, &q) < 0)
		return -1;
	t->type = type;
	size_t es = type_size(type);
	if (!es)
		return fail(f, "tensor %d (%s) is of type %s, which is not supported (uint8, int8, int32, int64, float32 are)",
			    idx, t->name, cmr_tfl_type_name(type));
	if (rank > TFL_MAX_RANK)
		return fail(f, "tensor %d (%s) has %zu dimensions, at most %d are supported", idx, t->name, rank, TFL_MAX_RANK);
	t->rank = (int)rank;
	t->nelem = 1;
	for (size_t d = 0; d < rank; d++) {
		int32_t v = (int32_t)rd32(shape + 4 * d);
		if (v < 1 || v > (1 << 24))
			return fail(f, "tensor %d (%s): dimension %zu is %d", idx, t->name, d, v);
		t->shape[d] = v;
		t->nelem *= (size_t)v;
		if (t->nelem > ((size_t)1 << 31))
			return fail(f, "tensor %d (%s) has more than 2^31 elements", idx, t->name);
	}
	t->nbytes = t->nelem * es;
	if (buffer >= nbufs)
		return fail(f, "tensor %d (%s) names buffer %u of %zu", idx, t->name, buffer, nbufs);
	if (buffer) {
		size_t bp;
		const uint8_t *d;
		size_t dn;
		if (vec_table(f, bufs, buffer, &bp) < 0 || get_vec(f, bp, 0, 1, &d, &dn) < 0)
			return -1;
		uint64_t off = 0, size = 0;
		int64_t p1 = field(f, bp, 1, 8), p2 = field(f, bp, 2, 8);
		if (p1 < 0 || p2 < 0)
			return -1;
		if (p1)
			off = (uint64_t)rd32(f->b + p1) | (uint64_t)rd32(f->b + p1 + 4) << 32;
		if (p2)
			size = (uint64_t)rd32(f->b + p2) | (uint64_t)rd32(f->b + p2 + 4) << 32;
		if (!dn && off > 1) { /* a buffer outside the flatbuffer, at an offset of the file */
			if (off > f->n || size > f->n - off)
				return fail(f, "tensor %d (%s): buffer %u (offset %llu, %llu bytes) lies outside the file", idx,
					    t->name, buffer, (unsigned long long)off, (unsigned long long)size);
			d = f->b + off, dn = (size_t)size;
		}
		if (dn) {
			if (dn != t->nbytes)
				return fail(f, "tensor %d (%s): buffer %u holds %zu bytes, the shape needs %zu", idx, t->name,
					    buffer, dn, t->nbytes);
			t->data = d;
		}
	}
	if (q && read_quant(f, q, t, idx) < 0)
		return -1;
	return 0;
}

/* ---- operators ---- */
static int read_ints(fb *f, size_t pos, int id, int *out, int cap, int *n, int ntensors, const char *what, int idx)
{
	const uint8_t *v;
	size_t len;
	if (get_vec(f, pos, id, 4, &v, &len) < 0)
		return -1;
	if (len > (size_t)cap)
		return fail(f, "operator %d has %zu %s, at most %d are supported", idx, len, what, cap);
	for (size_t i = 0; i < len; i++) {
		int32_t t = (int32_t)rd32(v + 4 * i);
		if (t < -1 || t >= ntensors)
			return fail(f, "operator %d: %s %zu names tensor %d of %d", idx, what, i, t, ntensors);
		out[i] = t;
	}
	*n = (int)len;
	return 0;
}

static int read_options(fb *f, size_t o, cmr_tfl_op *op, int idx)
{
	uint8_t pad = 0, act = 0, keep = 0;
	int32_t sw = 1, sh = 1, dw = 1, dh = 1, dm = 1, fw = 0, fh = 0;
	int rc = 0;
	switch (op->code) {
	case TFL_CONV_2D:
		rc = get_u8(f, o, 0, 0, &pad) | get_i32(f, o, 1, 1, &sw) | get_i32(f, o, 2, 1, &sh) | get_u8(f, o, 3, 0, &act) |
		     get_i32(f, o, 4, 1, &dw) | get_i32(f, o, 5, 1, &dh);
		break;
	case TFL_DEPTHWISE_CONV_2D:
		rc = get_u8(f, o, 0, 0, &pad) | get_i32(f, o, 1, 1, &sw) | get_i32(f, o, 2, 1, &sh) |
		     get_i32(f, o, 3, 1, &dm) | get_u8(f, o, 4, 0, &act) | get_i32(f, o, 5, 1, &dw) | get_i32(f, o, 6, 1, &dh);
		break;
	case TFL_AVERAGE_POOL_2D:
		rc = get_u8(f, o, 0, 0, &pad) | get_i32(f, o, 1, 1, &sw) | get_i32(f, o, 2, 1, &sh) |
		     get_i32(f, o, 3, 0, &fw) | get_i32(f, o, 4, 0, &fh) | get_u8(f, o, 5, 0, &act);
		break;
	case TFL_ADD: rc = get_u8(f, o, 0, 0, &act); break;
	case TFL_FULLY_CONNECTED: {
		uint8_t wf = 0;
		rc = get_u8(f, o, 0, 0, &act) | get_u8(f, o, 1, 0, &wf) | get_u8(f, o, 2, 0, &keep);
		if (!rc && wf)
			return fail(f, "operator %d (FULLY_CONNECTED): shuffled weights are not supported", idx);
		break;
	}
	case TFL_SOFTMAX: rc = get_f32(f, o, 0, 1.0f, &op->beta); break;
	case TFL_MEAN: rc = get_u8(f, o, 0, 0, &keep); break;
	default: break;
	}
	if (rc)
		return -1;
	if (pad > TFL_PAD_VALID)
		return fail(f, "operator %d (%s): padding %d is unknown", idx, cmr_tfl_op_name(op->code), pad);
	if (act != TFL_ACT_NONE && act != TFL_ACT_RELU && act != TFL_ACT_RELU6 && act != TFL_ACT_RELU_N1_TO_1)
		return fail(f, "operator %d (%s): fused activation %d is not supported", idx, cmr_tfl_op_name(op->code), act);
	if (sw < 1 || sh < 1 || sw > 64 || sh > 64 || dw < 1 || dh < 1 || dw > 64 || dh > 64 || dm < 1 || dm > 4096 ||
	    fw < 0 || fh < 0 || fw > 4096 || fh > 4096)
		return fail(f, "operator %d (%s): strides %d,%d, dilations %d,%d, depth multiplier %d or filter %dx%d out of range",
			    idx, cmr_tfl_op_name(op->code), sw, sh, dw, dh, dm, fw, fh);
	op->padding = pad, op->act = act, op->stride_w = sw, op->stride_h = sh, op->dil_w = dw, op->dil_h = dh;
	op->depth_mult = dm, op->filter_w = fw, op->filter_h = fh, op->keep_dims = keep;
	if (op->code == TFL_SOFTMAX && (!(op->beta > 0) || !isfinite(op->beta)))
		return fail(f, "operator %d (SOFTMAX): beta %g", idx, op->beta);
	return 0;
}

static int parse(fb *f, cmr_tfl_model *m)
{
	if (!cmr_tfl_sniff(f->b, f->n))
		return fail(f, "not a TensorFlow Lite model (no \"TFL3\" identifier at offset 4)");
	size_t root = rd32(f->b);
	if (root >= f->n)
		return fail(f, "the root table's offset %zu lies outside the file", root);
	const uint8_t *codes, *subgraphs, *bufs;
	size_t ncodes, nsub, nbufs;
	if (get_u32(f, root, 0, 0, &m->version) < 0 || get_vec(f, root, 1, 4, &codes, &ncodes) < 0 ||
	    get_vec(f, root, 2, 4, &subgraphs, &nsub) < 0 || get_str(f, root, 3, m->description, sizeof m->description) < 0 ||
	    get_vec(f, root, 4, 4, &bufs, &nbufs) < 0)
		return -1;
	if (m->version != 3)
		return fail(f, "schema version %u, only version 3 is read", m->version);
	if (nsub != 1)
		return fail(f, "%zu subgraphs: models of one subgraph are supported", nsub);
	size_t sg;
	const uint8_t *tens, *ops;
	size_t nt, nops;
	if (vec_table(f, subgraphs, 0, &sg) < 0 || get_vec(f, sg, 0, 4, &tens, &nt) < 0 || get_vec(f, sg, 3, 4, &ops, &nops) < 0)
		return -1;
	if (!nt || nt > TFL_TENSORS_MAX || !nops || nops > TFL_OPS_MAX)
		return fail(f, "%zu tensors and %zu operators", nt, nops);
	m->ntensors = (int)nt, m->nops = (int)nops;
	m->t = calloc(nt, sizeof *m->t);
	m->op = calloc(nops, sizeof *m->op);
	if (!m->t || !m->op)
		return fail(f, "out of memory");
	for (size_t i = 0; i < nt; i++) {
		size_t tp;
		if (vec_table(f, tens, i, &tp) < 0 || read_tensor(f, tp, (int)i, bufs, nbufs, &m->t[i]) < 0)
			return -1;
	}
	int io[4], nio;
	if (read_ints(f, sg, 1, io, 4, &nio, m->ntensors, "graph inputs", -1) < 0)
		return -1;
	if (nio != 1 || io[0] < 0)
		return fail(f, "the graph has %d inputs: one image input is supported", nio);
	m->input = io[0];
	if (read_ints(f, sg, 2, io, 4, &nio, m->ntensors, "graph outputs", -1) < 0)
		return -1;
	if (nio != 1 || io[0] < 0)
		return fail(f, "the graph has %d outputs: one is supported", nio);
	m->output = io[0];
	m->pool_op = -1;
	for (size_t i = 0; i < nops; i++) {
		size_t op;
		uint32_t ci;
		cmr_tfl_op *o = &m->op[i];
		if (vec_table(f, ops, i, &op) < 0 || get_u32(f, op, 0, 0, &ci) < 0)
			return -1;
		if (ci >= ncodes)
			return fail(f, "operator %zu names operator code %u of %zu", i, ci, ncodes);
		size_t cp;
		int8_t dep;
		int32_t code;
		uint8_t depu;
		if (vec_table(f, codes, ci, &cp) < 0 || get_u8(f, cp, 0, 0, &depu) < 0 || get_i32(f, cp, 3, 0, &code) < 0)
			return -1;
		dep = (int8_t)depu;
		if (code < dep) /* old files carry the code in the deprecated byte only */
			code = dep;
		const char *name = cmr_tfl_op_name(code);
		switch (code) {
		case TFL_ADD: case TFL_AVERAGE_POOL_2D: case TFL_CONV_2D: case TFL_DEPTHWISE_CONV_2D: case TFL_DEQUANTIZE:
		case TFL_FULLY_CONNECTED: case TFL_RESHAPE: case TFL_SOFTMAX: case TFL_MEAN: case TFL_QUANTIZE:
			break;
		default:
			if (name)
				return fail(f, "operator %zu is %s, which is not supported", i, name);
			return fail(f, "operator %zu is builtin operator %d, which is not supported", i, code);
		}
		o->code = code;
		int outs[4], nout;
		if (read_ints(f, op, 1, o->in, 3, &o->nin, m->ntensors, "inputs", (int)i) < 0 ||
		    read_ints(f, op, 2, outs, 4, &nout, m->ntensors, "outputs", (int)i) < 0)
			return -1;
		if (nout != 1 || outs[0] < 0)
			return fail(f, "operator %zu (%s) has %d outputs", i, name, nout);
		o->out = outs[0];
		size_t opts;
		if (get_ref(f, op, 4, &opts) < 0 || (opts && read_options(f, opts, o, (int)i) < 0))
			return -1;
		if (!opts) { /* defaults */
			o->stride_w = o->stride_h = o->dil_w = o->dil_h = o->depth_mult = 1;
			o->beta = 1.0f;
		}
		if (code == TFL_AVERAGE_POOL_2D || code == TFL_MEAN)
			m->pool_op = (int)i;
	}
	m->hash = XXH3_64bits(f->b, f->n);
	return 0;
}

int cmr_tfl_parse(cmr_tfl_model *m, const void *buf, size_t size, char *err, size_t errlen)
{
	memset(m, 0, sizeof *m);
	if (size > TFL_FILE_MAX) {
		snprintf(err, errlen, "the model has %zu bytes, more than %zu", size, TFL_FILE_MAX);
		return -1;
	}
	m->file = malloc(size ? size : 1);
	if (!m->file) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(m->file, buf, size);
	m->size = size;
	fb f = {m->file, size, err, errlen};
	if (parse(&f, m) < 0) {
		cmr_tfl_free(m);
		return -1;
	}
	return 0;
}

int cmr_tfl_open(cmr_tfl_model *m, const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	uint8_t *buf = NULL;
	size_t n = 0, cap = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? 2 * cap : 1 << 20;
			uint8_t *nb = cap <= TFL_FILE_MAX + (1 << 20) ? realloc(buf, cap) : NULL;
			if (!nb) {
				free(buf), fclose(fp);
				snprintf(err, errlen, "%s: too large, or out of memory", path);
				return -1;
			}
			buf = nb;
		}
		size_t k = fread(buf + n, 1, cap - n, fp);
		n += k;
		if (k == 0)
			break;
	}
	int bad = ferror(fp);
	fclose(fp);
	if (bad) {
		free(buf);
		snprintf(err, errlen, "%s: read error", path);
		return -1;
	}
	char e[900];
	int rc = cmr_tfl_parse(m, buf, n, e, sizeof e);
	free(buf);
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", path, e);
	return rc;
}

void cmr_tfl_free(cmr_tfl_model *m)
{
	if (m->t)
		for (int i = 0; i < m->ntensors; i++)
			free(m->t[i].scale), free(m->t[i].zero_point);
	free(m->t);
	free(m->op);
	free(m->file);
	memset(m, 0, sizeof *m);
}
