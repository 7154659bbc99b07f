/* origin.h - which model a set of embeddings comes from, as their provenance says, and the
 * one rule by which cmr-eval, cmr-index and cmr-query refuse to mix models.
 *
 * cmr-encode's provenance (cmr-stream(5)) names the model in a "model" member: the tower
 * that computed the embeddings, and the identities of both towers of the model (tuning
 * included). Two sets of embeddings agree when one model has both of the towers that made
 * them: A (tower a of model MA) and B (tower b of model MB) agree when MA[a] = MB[a] or
 * MA[b] = MB[b]. So images of a vision-prompt tuning and texts of its base agree (the text
 * tower is the same), while two trainings never do. Embeddings whose provenance names no
 * model (imported with cmr-dump from-npy, say) agree with everything. */
#ifndef CMR_ORIGIN_H
#define CMR_ORIGIN_H

#include <stddef.h>
#include <stdint.h>

#define CMR_ORIGINS_MAX 8

typedef struct cmr_origin {
	int tower;          /* enum cmr_tower: the tower that computed them */
	uint64_t towers[2]; /* the model's towers' identities (vision, text) */
	uint64_t id;        /* the model's identity over both (cmr_clip_id) */
	char name[512];     /* "clip-b32", "clip-b32 + tuning out/render" */
	char input[512];    /* where they were first seen */
} cmr_origin;

/* The distinct origins of what was read (at most CMR_ORIGINS_MAX), and the provenance
 * records read, oldest first, to be carried on. */
typedef struct cmr_origins {
	cmr_origin o[CMR_ORIGINS_MAX];
	int n;
	cmr_origin pending;    /* the origin of the embeddings that follow: the current input's */
	int has_pending;       /* latest provenance that names a model */
	char **hist_key, **hist_json;
	int nhist, hist_cap;
	size_t hist_bytes;
	uint64_t hist_dropped; /* records not kept (over the limits below) */
} cmr_origins;

/* Set by --force: a mix is reported as a warning instead of an error. */
extern int cmr_force_mix;

/* A provenance record (key, JSON text) of input: kept in the history; when it names the
 * model that computed embeddings, the embeddings after it come from that model. */
void cmr_origins_provenance(cmr_origins *s, const char *key, const char *json, size_t len, const char *input);
/* A new input begins: embeddings before its first model provenance have none. */
void cmr_origins_input(cmr_origins *s);
/* An embedding (described by where, for messages) is read: its origin joins the set; a
 * model that disagrees with one already there is fatal (a warning with cmr_force_mix). */
void cmr_origins_embedding(cmr_origins *s, const char *where);
/* Every origin of a agrees with every origin of b; the message names the inputs each was
 * seen in. Dies (warns with cmr_force_mix). */
void cmr_origins_check(const cmr_origins *a, const cmr_origins *b);
/* Adds b's origins and history to a (checking them as cmr_origins_check does). */
void cmr_origins_merge(cmr_origins *a, const cmr_origins *b);
/* own (a tool's provenance JSON object) with "models" (the origins) and "history" (the
 * provenance records read) added: what an index file keeps (cmr-index(5)). malloc'ed. */
char *cmr_origins_json(const char *own, const cmr_origins *s);
/* The origins and history that an index's provenance keeps (cmr_origins_json's members);
 * input names the index. Returns 0, or -1 if the JSON is not one (then s is empty). */
int cmr_origins_from_json(cmr_origins *s, const char *json, const char *input);
/* "clip-b32 (model 0123456789abcdef)" into buf. */
const char *cmr_origin_describe(const cmr_origin *o, char *buf, size_t cap);
void cmr_origins_free(cmr_origins *s);

#endif
