/* format/stream.h - the cmr tensor stream format (formats/cmr-stream.md): records, reader, writer.
 *
 * This layer never prints and never exits: every failure is returned as -1 with a message
 * in the reader's or writer's error buffer, so it can be used from tests and fuzzers. */
#ifndef CMR_STREAM_H
#define CMR_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CMR_MAGIC0 0x89u
#define CMR_MAGIC1 'C'
#define CMR_MAGIC2 'M'
#define CMR_MAGIC3 'R'

#define CMR_VERSION 1              /* the version writers emit */
#define CMR_VERSION_MIN 1          /* the oldest version readers accept */
#define CMR_HEADER_LEN_V1 48       /* fixed header length of version 1 */
#define CMR_HEADER_LEN_MAX 4096    /* readers refuse longer headers */
#define CMR_KEY_MAX 1024           /* bytes of UTF-8, without terminator */
#define CMR_RANK_MAX 4
#define CMR_DIM_MAX 0x7fffffffu    /* one dimension */
#define CMR_PAYLOAD_MAX (1ull << 30) /* decompressed payload of one record: 1 GiB */
#define CMR_META_MAX (16u << 20)   /* decompressed payload of a metadata record: 16 MiB */
#define CMR_CHECKSUM_LEN 8

/* Record types (byte 5). Numbers are never reused. */
enum cmr_type {
	CMR_TYPE_TENSOR = 1,
	CMR_TYPE_META = 2,
};

/* Flags (bytes 8-9). Bits 0-7 are critical: a reader that does not know one must refuse the
 * record. Bits 8-15 are ancillary: a reader may ignore them. */
#define CMR_FLAG_ZSTD 0x0001u
#define CMR_FLAGS_CRITICAL 0x00ffu
#define CMR_FLAGS_KNOWN CMR_FLAG_ZSTD

/* Element types (byte 12). Numbers are never reused. */
enum cmr_dtype {
	CMR_DTYPE_U8 = 1,
	CMR_DTYPE_I8 = 2,
	CMR_DTYPE_U16 = 3,
	CMR_DTYPE_I16 = 4,
	CMR_DTYPE_U32 = 5,
	CMR_DTYPE_I32 = 6,
	CMR_DTYPE_I64 = 7,
	CMR_DTYPE_F16 = 8,
	CMR_DTYPE_F32 = 9,
	CMR_DTYPE_F64 = 10,
	CMR_DTYPE_BF16 = 11,
};

/* What a record means (bytes 10-11). Unknown kinds are passed along untouched. */
enum cmr_kind {
	CMR_KIND_GENERIC = 0,      /* any tensor */
	CMR_KIND_IMAGE = 1,        /* u8 [H, W, 3], RGB, row-major */
	CMR_KIND_TOKENS = 2,       /* i32 [T], CLIP BPE ids with start and end tokens */
	CMR_KIND_EMBEDDING = 3,    /* f32 or f16 [D] */
	CMR_KIND_DESC_TOKENS = 4,  /* i32 [T], tokens of an auxiliary (machine-made) description */
	CMR_KIND_SCORES = 5,       /* f32 [N] or [N, M] similarity scores */
	CMR_KIND_HITS = 6,         /* reserved for cmr-query's ranked hit lists */
	CMR_KIND_LABELS = 7,       /* i32 [N] class ids */
	CMR_KIND_VECTORS = 8,      /* f32 or f16 [N, D]: N embeddings of one key (an image's regions, a text's words) */
	CMR_KIND_PROVENANCE = 256, /* metadata: UTF-8 JSON object, u8 [n] */
};

typedef struct cmr_record {
	uint8_t version;  /* as read; writers always emit CMR_VERSION */
	uint8_t type;     /* enum cmr_type */
	uint16_t flags;   /* as stored (reader) or requested ancillary bits (writer) */
	uint16_t kind;    /* enum cmr_kind */
	uint8_t dtype;    /* enum cmr_dtype */
	uint8_t rank;     /* 0..CMR_RANK_MAX */
	uint32_t dims[CMR_RANK_MAX];
	char key[CMR_KEY_MAX + 1]; /* NUL-terminated copy */
	uint16_t key_len;
	const void *data; /* decompressed payload, host byte order; owned by reader or caller */
	uint64_t nbytes;  /* decompressed payload length */
	/* filled by the reader only */
	uint64_t stored_len; /* payload bytes in the stream */
	uint64_t offset;     /* byte offset of the record's first byte in the stream */
	uint64_t index;      /* 0-based record number in the stream */
	uint64_t checksum;   /* XXH3-64 as stored */
} cmr_record;

/* dtype helpers; all return 0 / NULL / -1 for an unknown dtype. */
size_t cmr_dtype_size(int dtype);
const char *cmr_dtype_name(int dtype);
int cmr_dtype_from_name(const char *name);
const char *cmr_kind_name(int kind); /* NULL if unknown */
int cmr_kind_from_name(const char *name);
const char *cmr_type_name(int type);

/* Reverses the bytes of each esize-byte element of data in place (byte-order conversion). */
void cmr_swap_elems(void *data, uint64_t nbytes, size_t esize);

/* Number of elements of a record's tensor (product of dims; 1 for rank 0). */
uint64_t cmr_record_nelem(const cmr_record *rec);

/* One hit of a hits record (kind hits, cmr-stream(5)): its key points into the payload. */
typedef struct cmr_hit {
	float score;
	const char *key;
	uint16_t len;
} cmr_hit;
/* The hits of a hits record, best first: checks that the entries fill the payload exactly
 * and stores at most cap of them in out (out may be NULL to count). Returns the count, or
 * -1 with the reason in *why. */
int64_t cmr_hits_decode(const cmr_record *rec, cmr_hit *out, size_t cap, const char **why);

/* Checks that a key is valid: at most CMR_KEY_MAX bytes, valid UTF-8, no control characters
 * (U+0000-U+001F, U+007F). Returns 0 or -1 with a reason in why. */
int cmr_key_check(const char *key, size_t len, const char **why);

/* ---- reading ---- */
typedef struct cmr_reader cmr_reader;

/* Reads from f, which the caller keeps open and closes; name is used in messages. */
cmr_reader *cmr_reader_new(FILE *f, const char *name);
void cmr_reader_free(cmr_reader *r);
/* Next record of a known type: returns 1 and fills rec (rec->data valid until the next call),
 * 0 at a clean end of stream, -1 on error (see cmr_reader_error). Records of an unknown type
 * are checked and skipped (counted in cmr_reader_skipped). After an error the reader stays
 * in error. */
int cmr_reader_next(cmr_reader *r, cmr_record *rec);
const char *cmr_reader_error(const cmr_reader *r);
uint64_t cmr_reader_skipped(const cmr_reader *r);
uint64_t cmr_reader_offset(const cmr_reader *r); /* bytes consumed so far */
/* Set to 0 to skip checksum verification (default 1). */
void cmr_reader_set_verify(cmr_reader *r, int verify);

/* ---- writing ---- */
typedef struct cmr_writer cmr_writer;

/* Writes to f (the caller closes it). level 0 = store payloads, 1..22 = zstd level. */
cmr_writer *cmr_writer_new(FILE *f, const char *name, int level);
void cmr_writer_free(cmr_writer *w);
/* Writes one record from rec's type, kind, dtype, rank, dims, key, data and nbytes (the flags
 * field may carry ancillary bits only). Payload data are in host byte order. Returns 0 or -1
 * with a message (errno kept from a failed write). */
int cmr_writer_put(cmr_writer *w, const cmr_record *rec);
/* Own provenance: a JSON text written as a metadata record with the given key (the tool's
 * name) just before the first tensor record, or by cmr_writer_finish if no tensor record
 * was written. */
int cmr_writer_set_provenance(cmr_writer *w, const char *key, const char *json);
/* Writes a provenance record now (for provenance learnt mid-stream). Returns 0 or -1. */
int cmr_writer_put_provenance(cmr_writer *w, const char *key, const char *json);
/* Writes pending provenance and flushes. Returns 0 or -1. */
int cmr_writer_finish(cmr_writer *w);
const char *cmr_writer_error(const cmr_writer *w);
uint64_t cmr_writer_count(const cmr_writer *w);

/* Convenience: fills rec as a tensor record (key copied, data referenced, not copied). */
int cmr_record_tensor(cmr_record *rec, int kind, int dtype, int rank, const uint32_t *dims,
		      const char *key, const void *data);

#endif
