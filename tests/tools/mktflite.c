/* mktflite - writes tiny TensorFlow Lite models (flatbuffers) with random weights: the tests' and the fuzzer's seeds.
 *
 *   mktflite u8 OUT.tflite [SEED]      uint8, per-tensor: CONV_2D, DEPTHWISE_CONV_2D, ADD,
 *                                      AVERAGE_POOL_2D, FULLY_CONNECTED, RESHAPE, SOFTMAX
 *   mktflite i8 OUT.tflite [SEED]      int8, per-channel: QUANTIZE, CONV_2D, DEPTHWISE_CONV_2D,
 *                                      ADD, MEAN, CONV_2D (1x1 logits), RESHAPE, SOFTMAX, DEQUANTIZE
 *   mktflite maxpool OUT.tflite        the u8 model with MAX_POOL_2D for its pooling (refused)
 *
 * Input [1,8,8,3] uint8, 5 classes. The writer lays the flatbuffer out forwards (every table
 * after its vtable, every child after the field that points to it), which the format allows. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *buf;
static size_t len, cap;

static size_t put(const void *p, size_t n)
{
	if (len + n > cap) {
		cap = (len + n) * 2 + 4096;
		if (!(buf = realloc(buf, cap)))
			exit(2);
	}
	memcpy(buf + len, p, n);
	len += n;
	return len - n;
}
static void pad(size_t a)
{
	static const uint8_t z[8];
	while (len % a)
		put(z, 1);
}
static void w32(size_t at, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		buf[at + i] = (uint8_t)(v >> (8 * i));
}
static void link_to(size_t field, size_t target) { w32(field, (uint32_t)(target - field)); }

/* A table of nf fields, each in a 4-byte slot (absent: size 0). Returns the table's position;
 * slot[i] is where field i's value lies. */
typedef struct {
	int size;      /* 0 absent, 1 or 4 bytes */
	uint32_t v;
} fld;
static size_t table(const fld *f, int nf, size_t *slot)
{
	pad(4);
	uint16_t vt[2 + 32];
	vt[0] = (uint16_t)(4 + 2 * nf), vt[1] = (uint16_t)(4 + 4 * nf);
	for (int i = 0; i < nf; i++)
		vt[2 + i] = f[i].size ? (uint16_t)(4 + 4 * i) : 0;
	size_t vpos = put(vt, 2 * (size_t)(2 + nf));
	pad(4);
	size_t tpos = len;
	uint8_t soff[4];
	uint32_t so = (uint32_t)(tpos - vpos);
	for (int i = 0; i < 4; i++)
		soff[i] = (uint8_t)(so >> (8 * i));
	put(soff, 4);
	for (int i = 0; i < nf; i++) {
		uint8_t b[4] = {(uint8_t)f[i].v, (uint8_t)(f[i].v >> 8), (uint8_t)(f[i].v >> 16), (uint8_t)(f[i].v >> 24)};
		if (slot)
			slot[i] = len;
		put(b, 4);
	}
	return tpos;
}
/* a vector of n elements of es bytes (little-endian host assumed, as the project) */
static size_t vec(const void *data, size_t n, size_t es)
{
	pad(4);
	if (es == 8 && len % 8 == 0) { /* elements 8-aligned */
		uint32_t z = 0;
		put(&z, 4);
	}
	uint32_t n32 = (uint32_t)n;
	size_t at = put(&n32, 4);
	if (n)
		put(data, n * es);
	return at;
}
static size_t str(const char *s)
{
	size_t at = vec(s, strlen(s) + 1, 1);
	w32(at, (uint32_t)strlen(s));
	return at;
}

static uint64_t rng;
static uint32_t rnd(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

enum { U8 = 3, I8 = 9, I32 = 2, F32 = 0 };
typedef struct {
	const char *name;
	int type, rank, shape[4];
	int nq;           /* 0: none; 1: per tensor; > 1 per channel along qdim */
	int qdim;
	float scale;      /* first scale (per-channel ones vary around it) */
	int64_t zp;
	int konst;        /* 1: random constant data; 2: the shape {1, 5} (RESHAPE); 3: the axes {1, 2} (MEAN) */
} tdef;
typedef struct {
	int code, nin, in[3], out;
	int opt_type;     /* BuiltinOptions union type, 0: none */
	int nopt;
	fld opt[8];
} odef;

static size_t nelem(const tdef *t)
{
	size_t n = 1;
	for (int d = 0; d < t->rank; d++)
		n *= (size_t)t->shape[d];
	return n;
}

static void write_model(const char *path, const tdef *T, int nt, const odef *O, int no, const int *codes, int ncodes)
{
	len = 0;
	uint8_t head[8] = {0, 0, 0, 0, 'T', 'F', 'L', '3'};
	put(head, 8);
	size_t ms[5];
	fld mf[5] = {{4, 3}, {4, 0}, {4, 0}, {4, 0}, {4, 0}}; /* version, operator_codes, subgraphs, description, buffers */
	size_t model = table(mf, 5, ms);
	w32(0, (uint32_t)model);
	link_to(ms[3], str("mktflite"));
	/* operator codes */
	uint32_t *z = calloc(64, 4);
	size_t cv = vec(z, (size_t)ncodes, 4);
	link_to(ms[1], cv);
	for (int i = 0; i < ncodes; i++) {
		fld cf[4] = {{1, (uint32_t)(codes[i] < 127 ? codes[i] : 127)}, {0, 0}, {4, 1}, {4, (uint32_t)codes[i]}};
		link_to(cv + 4 + 4 * (size_t)i, table(cf, 4, NULL));
	}
	/* buffers: 0 empty, then one per constant tensor */
	int nbuf = 1;
	for (int i = 0; i < nt; i++)
		nbuf += T[i].konst != 0;
	size_t bv = vec(z, (size_t)nbuf, 4);
	link_to(ms[4], bv);
	int *bufof = calloc(nt > 0 ? (size_t)nt : 1, sizeof *bufof);
	for (int i = 0, b = 1; i < nt; i++)
		if (T[i].konst)
			bufof[i] = b++;
	fld ef[1] = {{0, 0}};
	link_to(bv + 4, table(ef, 1, NULL));
	for (int i = 0; i < nt; i++) {
		if (!T[i].konst)
			continue;
		size_t bs[1];
		fld bf[1] = {{4, 0}};
		size_t bt = table(bf, 1, bs);
		link_to(bv + 4 + 4 * (size_t)bufof[i], bt);
		size_t n = nelem(&T[i]), es = T[i].type == I32 ? 4 : 1;
		uint8_t *d = malloc(n * es);
		if (T[i].konst >= 2) { /* RESHAPE's shape {1, 5}, MEAN's axes {1, 2} */
			int32_t s[2] = {1, T[i].konst == 2 ? 5 : 2};
			memcpy(d, s, 8);
		} else if (T[i].type == I32) {
			for (size_t k = 0; k < n; k++) {
				int32_t v = (int32_t)(rnd() % 2001) - 1000;
				memcpy(d + 4 * k, &v, 4);
			}
		} else {
			for (size_t k = 0; k < n; k++)
				d[k] = (uint8_t)(T[i].type == I8 ? (int8_t)((int)(rnd() % 255) - 127) : (uint8_t)(rnd() % 256));
		}
		link_to(bs[0], vec(d, n * es, 1));
		free(d);
	}
	/* the subgraph */
	size_t sv = vec(z, 1, 4);
	link_to(ms[2], sv);
	size_t ss[5];
	fld sf[5] = {{4, 0}, {4, 0}, {4, 0}, {4, 0}, {4, 0}};
	size_t sg = table(sf, 5, ss);
	link_to(sv + 4, sg);
	link_to(ss[4], str("main"));
	int32_t io = 0;
	link_to(ss[1], vec(&io, 1, 4));
	io = nt - 1;
	link_to(ss[2], vec(&io, 1, 4));
	size_t tv = vec(z, (size_t)nt, 4);
	link_to(ss[0], tv);
	for (int i = 0; i < nt; i++) {
		const tdef *t = &T[i];
		size_t ts[5];
		fld tf[5] = {{4, 0}, {4, (uint32_t)t->type}, {4, (uint32_t)bufof[i]}, {4, 0}, {t->nq ? 4 : 0, 0}};
		size_t tt = table(tf, 5, ts);
		link_to(tv + 4 + 4 * (size_t)i, tt);
		link_to(ts[0], vec(t->shape, (size_t)t->rank, 4));
		link_to(ts[3], str(t->name));
		if (t->nq) {
			size_t qs[7];
			fld qf[7] = {{0, 0}, {0, 0}, {4, 0}, {4, 0}, {0, 0}, {0, 0}, {4, (uint32_t)t->qdim}};
			size_t qt = table(qf, 7, qs);
			link_to(ts[4], qt);
			float sc[64];
			int64_t zp[64];
			for (int c = 0; c < t->nq; c++)
				sc[c] = t->scale * (t->nq > 1 ? 0.5f + (float)(rnd() % 1000) / 1000.0f : 1.0f), zp[c] = t->zp;
			link_to(qs[2], vec(sc, (size_t)t->nq, 4));
			link_to(qs[3], vec(zp, (size_t)t->nq, 8));
		}
	}
	size_t ov = vec(z, (size_t)no, 4);
	link_to(ss[3], ov);
	for (int i = 0; i < no; i++) {
		const odef *o = &O[i];
		size_t os[5];
		fld of[5] = {{4, (uint32_t)o->code}, {4, 0}, {4, 0}, {o->opt_type ? 1 : 0, (uint32_t)o->opt_type},
			     {o->opt_type ? 4 : 0, 0}};
		size_t ot = table(of, 5, os);
		link_to(ov + 4 + 4 * (size_t)i, ot);
		link_to(os[1], vec(o->in, (size_t)o->nin, 4));
		link_to(os[2], vec(&o->out, 1, 4));
		if (o->opt_type)
			link_to(os[4], table(o->opt, o->nopt, NULL));
	}
	free(z), free(bufof);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "mktflite: cannot write %s\n", path);
		exit(1);
	}
}

/* operator code indices of write_model's codes[] */
int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: mktflite u8|i8|maxpool OUT.tflite [SEED]\n");
		return 2;
	}
	rng = argc > 3 ? strtoull(argv[3], NULL, 10) * 2654435761u + 1 : 88172645463325252ull;
	int i8 = strcmp(argv[1], "i8") == 0, maxpool = strcmp(argv[1], "maxpool") == 0;
	if (!i8 && !maxpool && strcmp(argv[1], "u8") != 0) {
		fprintf(stderr, "mktflite: '%s' is not u8, i8 or maxpool\n", argv[1]);
		return 2;
	}
	/* builtin codes: ADD 0, AVERAGE_POOL_2D 1, CONV_2D 3, DEPTHWISE 4, DEQUANTIZE 6, FC 9, MAX_POOL 17,
	 * RESHAPE 22, SOFTMAX 25, MEAN 40, QUANTIZE 114 */
	int codes[] = {0, 1, 3, 4, 6, 9, 17, 22, 25, 40, 114};
	enum { C_ADD, C_AVG, C_CONV, C_DW, C_DEQ, C_FC, C_MAX, C_RESHAPE, C_SOFTMAX, C_MEAN, C_QUANT };
	/* options tables: Conv2D {padding, stride_w, stride_h, act}, DepthwiseConv2D {padding, sw, sh,
	 * multiplier, act}, Pool2D {padding, sw, sh, fw, fh, act}, Add {act}, FC {act}, Softmax {beta} */
	float one = 1.0f;
	uint32_t beta;
	memcpy(&beta, &one, 4);
	if (!i8) {
		tdef T[] = {
			{"input", U8, 4, {1, 8, 8, 3}, 1, 0, 1.0f / 128, 128, 0},
			{"conv/w", U8, 4, {4, 3, 3, 3}, 1, 0, 0.02f, 120, 1},
			{"conv/b", I32, 1, {4}, 0, 0, 0, 0, 1},
			{"conv", U8, 4, {1, 4, 4, 4}, 1, 0, 6.0f / 255, 0, 0},
			{"dw/w", U8, 4, {1, 3, 3, 4}, 1, 0, 0.03f, 128, 1},
			{"dw/b", I32, 1, {4}, 0, 0, 0, 0, 1},
			{"dw", U8, 4, {1, 4, 4, 4}, 1, 0, 6.0f / 255, 0, 0},
			{"add", U8, 4, {1, 4, 4, 4}, 1, 0, 0.05f, 10, 0},
			{"pool", U8, 4, {1, 1, 1, 4}, 1, 0, 0.05f, 10, 0},
			{"fc/w", U8, 2, {5, 4}, 1, 0, 0.02f, 130, 1},
			{"fc/b", I32, 1, {5}, 0, 0, 0, 0, 1},
			{"fc", U8, 2, {1, 5}, 1, 0, 0.1f, 100, 0},
			{"shape", I32, 1, {2}, 0, 0, 0, 0, 2},
			{"logits", U8, 2, {1, 5}, 1, 0, 0.1f, 100, 0},
			{"probs", U8, 2, {1, 5}, 1, 0, 1.0f / 256, 0, 0},
		};
		odef O[] = {
			{C_CONV, 3, {0, 1, 2}, 3, 1, 4, {{1, 0}, {4, 2}, {4, 2}, {1, 3}}},
			{C_DW, 3, {3, 4, 5}, 6, 2, 5, {{1, 0}, {4, 1}, {4, 1}, {4, 1}, {1, 3}}},
			{C_ADD, 2, {3, 6}, 7, 11, 1, {{1, 0}}},
			{maxpool ? C_MAX : C_AVG, 1, {7}, 8, 5, 6, {{1, 1}, {4, 1}, {4, 1}, {4, 4}, {4, 4}, {1, 0}}},
			{C_FC, 3, {8, 9, 10}, 11, 8, 1, {{1, 0}}},
			{C_RESHAPE, 2, {11, 12}, 13, 0, 0, {{0, 0}}},
			{C_SOFTMAX, 1, {13}, 14, 9, 1, {{4, beta}}},
		};
		write_model(argv[2], T, (int)(sizeof T / sizeof *T), O, (int)(sizeof O / sizeof *O), codes,
			    (int)(sizeof codes / sizeof *codes));
		return 0;
	}
	tdef T[] = {
		{"input", U8, 4, {1, 8, 8, 3}, 1, 0, 1.0f / 127.5f, 127, 0},
		{"q", I8, 4, {1, 8, 8, 3}, 1, 0, 1.0f / 127.5f, -1, 0},
		{"conv/w", I8, 4, {6, 3, 3, 3}, 6, 0, 0.02f, 0, 1},
		{"conv/b", I32, 1, {6}, 0, 0, 0, 0, 1},
		{"conv", I8, 4, {1, 4, 4, 6}, 1, 0, 6.0f / 255, -128, 0},
		{"dw/w", I8, 4, {1, 3, 3, 6}, 6, 3, 0.03f, 0, 1},
		{"dw/b", I32, 1, {6}, 0, 0, 0, 0, 1},
		{"dw", I8, 4, {1, 4, 4, 6}, 1, 0, 6.0f / 255, -128, 0},
		{"add", I8, 4, {1, 4, 4, 6}, 1, 0, 0.05f, -100, 0},
		{"axis", I32, 1, {2}, 0, 0, 0, 0, 3},
		{"mean", I8, 4, {1, 1, 1, 6}, 1, 0, 0.03f, -90, 0},
		{"logit/w", I8, 4, {5, 1, 1, 6}, 5, 0, 0.02f, 0, 1},
		{"logit/b", I32, 1, {5}, 0, 0, 0, 0, 1},
		{"logit", I8, 4, {1, 1, 1, 5}, 1, 0, 0.1f, -20, 0},
		{"shape", I32, 1, {2}, 0, 0, 0, 0, 2},
		{"logits", I8, 2, {1, 5}, 1, 0, 0.1f, -20, 0},
		{"probs8", I8, 2, {1, 5}, 1, 0, 1.0f / 256, -128, 0},
		{"probs", F32, 2, {1, 5}, 0, 0, 0, 0, 0},
	};
	odef O[] = {
		{C_QUANT, 1, {0}, 1, 0, 0, {{0, 0}}},
		{C_CONV, 3, {1, 2, 3}, 4, 1, 4, {{1, 0}, {4, 2}, {4, 2}, {1, 3}}},
		{C_DW, 3, {4, 5, 6}, 7, 2, 5, {{1, 0}, {4, 1}, {4, 1}, {4, 1}, {1, 3}}},
		{C_ADD, 2, {4, 7}, 8, 11, 1, {{1, 0}}},
		{C_MEAN, 2, {8, 9}, 10, 27, 1, {{1, 1}}},
		{C_CONV, 3, {10, 11, 12}, 13, 1, 4, {{1, 1}, {4, 1}, {4, 1}, {1, 0}}},
		{C_RESHAPE, 2, {13, 14}, 15, 0, 0, {{0, 0}}},
		{C_SOFTMAX, 1, {15}, 16, 9, 1, {{4, beta}}},
		{C_DEQ, 1, {16}, 17, 0, 0, {{0, 0}}},
	};
	write_model(argv[2], T, (int)(sizeof T / sizeof *T), O, (int)(sizeof O / sizeof *O), codes,
		    (int)(sizeof codes / sizeof *codes));
	return 0;
}
