/* tflite/tflite.h - TensorFlow Lite models: a bounds-checked reader of the flatbuffer file and an
 * interpreter of the quantised image classifiers (MobileNet v1/v2) with TFLite's integer arithmetic.
 *
 * The reader (tflite.c) accepts only what the interpreter can run: one subgraph, operators
 * among CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, MEAN, RESHAPE, FULLY_CONNECTED,
 * SOFTMAX, QUANTIZE, DEQUANTIZE, tensors of uint8, int8, int32 or float32 with at most 4
 * dimensions; any other operator, type or option is an error naming it. Every offset, length and
 * index of the file is checked before use (the file is untrusted). The kernels (qops.c) are the
 * plain, obviously correct integer loops and the fast path (im2col + dgemm on the zero-point
 * offset integers: exact, since every product sum stays far below 2^53). This layer never prints
 * and never exits. */
#ifndef CMR_TFLITE_H
#define CMR_TFLITE_H

#include <stddef.h>
#include <stdint.h>

/* TensorType values of the schema */
enum { TFL_FLOAT32 = 0, TFL_INT32 = 2, TFL_UINT8 = 3, TFL_INT64 = 4, TFL_INT8 = 9 };

/* BuiltinOperator values of the schema */
enum {
	TFL_ADD = 0,
	TFL_AVERAGE_POOL_2D = 1,
	TFL_CONV_2D = 3,
	TFL_DEPTHWISE_CONV_2D = 4,
	TFL_DEQUANTIZE = 6,
	TFL_FULLY_CONNECTED = 9,
	TFL_RESHAPE = 22,
	TFL_SOFTMAX = 25,
	TFL_MEAN = 40,
	TFL_QUANTIZE = 114,
};

/* ActivationFunctionType */
enum { TFL_ACT_NONE = 0, TFL_ACT_RELU = 1, TFL_ACT_RELU_N1_TO_1 = 2, TFL_ACT_RELU6 = 3 };
/* Padding */
enum { TFL_PAD_SAME = 0, TFL_PAD_VALID = 1 };

#define TFL_MAX_RANK 4
#define TFL_NAME_MAX 128

typedef struct cmr_tfl_tensor {
	int type;                 /* TFL_* */
	int rank;
	int shape[TFL_MAX_RANK];
	size_t nelem, nbytes;
	const uint8_t *data;      /* constant data in the file, or NULL (an activation) */
	/* quantisation: nq scales and zero points (1: per tensor; >1: per channel along qdim) */
	int nq, qdim;
	float *scale;
	int32_t *zero_point;
	char name[TFL_NAME_MAX];
} cmr_tfl_tensor;

typedef struct cmr_tfl_op {
	int code;                 /* TFL_* builtin operator */
	int nin, in[3];           /* tensor indices; -1 for an optional input left out */
	int out;
	/* options (those of the operator's kind; the rest 0) */
	int padding, stride_w, stride_h, dil_w, dil_h, depth_mult, filter_w, filter_h, act;
	int keep_dims;
	float beta;
} cmr_tfl_op;

typedef struct cmr_tfl_model {
	uint8_t *file;            /* the whole file, owned */
	size_t size;
	uint32_t version;
	char description[TFL_NAME_MAX];
	int ntensors, nops;
	cmr_tfl_tensor *t;
	cmr_tfl_op *op;
	int input, output;        /* the graph's one input and one output tensor */
	int pool_op;              /* index of the last AVERAGE_POOL_2D or MEAN (the global pooling), or -1 */
	uint64_t hash;            /* XXH3-64 of the file */
} cmr_tfl_model;

/* Parses a model from memory (copied: the caller keeps buf). Returns 0 or -1 with a message. */
int cmr_tfl_parse(cmr_tfl_model *m, const void *buf, size_t size, char *err, size_t errlen);
/* Reads and parses a file. Returns 0 or -1 with a message naming the file. */
int cmr_tfl_open(cmr_tfl_model *m, const char *path, char *err, size_t errlen);
void cmr_tfl_free(cmr_tfl_model *m);
/* 1 if the first bytes are a TFLite flatbuffer ("TFL3" at offset 4) */
int cmr_tfl_sniff(const void *buf, size_t n);
const char *cmr_tfl_op_name(int code);
const char *cmr_tfl_type_name(int type);

/* ---- running ---- */
typedef struct cmr_tfl_run cmr_tfl_run;

/* fast: 1 for the im2col + dgemm path, 0 for the plain loops. */
cmr_tfl_run *cmr_tfl_run_new(const cmr_tfl_model *m, int fast, char *err, size_t errlen);
void cmr_tfl_run_free(cmr_tfl_run *r);
/* The input image's size, and how one pixel byte becomes the input tensor (see cmr_tfl_invoke). */
void cmr_tfl_input_size(const cmr_tfl_model *m, int *h, int *w);
/* Runs the graph on one RGB image u8 [h, w, 3] of the input's size. A uint8 input takes the
 * pixels as they are, an int8 input takes pixel - 128 (the quantised input range covers the
 * float range the model was trained on, as in every Coral and TF post-training-quantised
 * classifier); a float32 input takes (pixel - 127.5) / 127.5. Returns 0 or -1 with a message. */
int cmr_tfl_invoke(cmr_tfl_run *r, const uint8_t *rgb, char *err, size_t errlen);
/* Multiply-adds of one run (convolutions, depthwise convolutions, fully connected layers). */
double cmr_tfl_macs(const cmr_tfl_model *m);
/* A tensor's values after cmr_tfl_invoke, dequantised: scale * (q - zero_point). out holds
 * nelem floats. Returns 0, or -1 for a tensor without values. */
int cmr_tfl_read(const cmr_tfl_run *r, int tensor, float *out);

/* ---- the kernels (qops.c), public for the tests ---- */
/* TFLite's fixed-point helpers */
int32_t cmr_tfl_srdhm(int32_t a, int32_t b);            /* SaturatingRoundingDoublingHighMul */
int32_t cmr_tfl_rdbpot(int32_t x, int exponent);        /* RoundingDivideByPOT */
int32_t cmr_tfl_mbqm(int32_t x, int32_t qm, int shift); /* MultiplyByQuantizedMultiplier */
void cmr_tfl_quantize_multiplier(double m, int32_t *qm, int *shift);

/* One quantised operand: values in a uint8 or int8 array, scales and zero points. */
typedef struct cmr_qt {
	int type;                 /* TFL_UINT8 or TFL_INT8 (int32 for biases, float for QUANTIZE's input) */
	int n, h, w, c;           /* NHWC; a vector is [1,1,1,c] */
	const void *data;
	int nq;                   /* 1 or per channel */
	const float *scale;
	const int32_t *zp;
} cmr_qt;

/* Each kernel writes out->data (non-const in practice) and returns 0, or -1 with a message. */
int cmr_tfl_conv(const cmr_tfl_op *op, const cmr_qt *in, const cmr_qt *filt, const int32_t *bias, cmr_qt *out,
		 int fast, double *scratch, char *err, size_t errlen);
size_t cmr_tfl_conv_scratch(const cmr_qt *in, const cmr_qt *filt, const cmr_qt *out); /* doubles */
int cmr_tfl_depthwise(const cmr_tfl_op *op, const cmr_qt *in, const cmr_qt *filt, const int32_t *bias, cmr_qt *out,
		      int fast, char *err, size_t errlen);
int cmr_tfl_add(const cmr_tfl_op *op, const cmr_qt *a, const cmr_qt *b, cmr_qt *out, char *err, size_t errlen);
int cmr_tfl_avgpool(const cmr_tfl_op *op, const cmr_qt *in, cmr_qt *out, char *err, size_t errlen);
int cmr_tfl_mean_hw(const cmr_qt *in, cmr_qt *out, char *err, size_t errlen);
int cmr_tfl_softmax(float beta, const cmr_qt *in, cmr_qt *out, char *err, size_t errlen);
int cmr_tfl_requantize(const cmr_qt *in, cmr_qt *out, char *err, size_t errlen); /* QUANTIZE q -> q */
void cmr_tfl_quantize_f32(const float *x, size_t n, cmr_qt *out);               /* QUANTIZE f32 -> q */
void cmr_tfl_dequantize(const cmr_qt *in, size_t n, float *out);                /* DEQUANTIZE */
/* The clamp range of a fused activation on a quantised output (TFLite's
 * CalculateActivationRangeQuantized). */
void cmr_tfl_act_range(int act, int type, float scale, int32_t zp, int32_t *lo, int32_t *hi);

#endif
