/* model/run.h - a training run over the model core, for any tool that trains: image and
 * caption records paired by key, a seeded sampler (the order of an epoch and the caption
 * drawn per step are functions of the seed, so a resumed run goes on exactly), AdamW state
 * for the trained parameters, evaluation (cmr-eval's Recall@K), checkpoints in Hugging
 * Face's layout with the training state (cmr-checkpoint(5)), a JSON-lines log, a progress
 * line, and signals that finish the step and save. Front-end code: errors go through lib/fe
 * (cmr_die), as a tool's own would. */
#ifndef CMR_MODEL_RUN_H
#define CMR_MODEL_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "dist.h"
#include "model/train.h"
#include "model/tuning.h"

/* Images and their captions, paired by key (the caption <image key>#<n> goes with the image
 * <image key>); images without captions are dropped, with a warning. */
#define CMR_MAX_PERSPECTIVES 8 /* description perspectives (APSE-IPIK has 3) */

typedef struct cmr_pair_image {
	char *key;
	uint8_t *px;
	int *cap; /* caption indices */
	int ncap;
	int desc[CMR_MAX_PERSPECTIVES]; /* the image's description of each perspective (an index
					 * into dtok), or -1 */
} cmr_pair_image;

typedef struct cmr_pairs {
	cmr_pair_image *img;
	size_t nimg, capimg;
	int32_t **tok;
	int *len;
	char **tkey;
	size_t ntok, captok;
	int size;         /* the model's image size */
	int features;     /* a features tower's input width: its images are embedding records f32 [features] */
	int context;
	int vocab;        /* the model's vocabulary: token ids in [0, vocab) */
	const char *what; /* "training" or "evaluation", for messages */
	/* descriptions (cmr_pairs_load_desc): desc-tokens records <image key>#<perspective>; the
	 * perspective is what follows the last '#' (cmr-caption-ingest --desc numbers an image's
	 * descriptions in their file's order: 0 global, 1 background, 2 entities for mkworld's) */
	int32_t **dtok;
	int *dlen;
	char **dkey;
	size_t ndesc, capdesc;
	int npersp;
	char persp[CMR_MAX_PERSPECTIVES][64];
	size_t persp_count[CMR_MAX_PERSPECTIVES]; /* images with a description of each */
	int reading_desc;
	/* a teacher's embeddings (cmr_pairs_load_teacher), unit rows of teacher_dim floats: one
	 * per image (teacher_img, in img's order) and one per caption (teacher_txt, in tok's) */
	float *teacher_img, *teacher_txt;
	int teacher_dim;
	/* the images' classes (cmr_pairs_load_labels): label[i] of img[i], ids in the order the
	 * classes first appear in the file */
	int *label;
	int nclass;
} cmr_pairs;

/* Reads the streams (cmr-decode's images at d->size, cmr-caption-ingest's tokens within
 * d->context: set these and d->what first) and pairs them; dies naming a bad record. */
void cmr_pairs_load(cmr_pairs *d, char *const *inputs, int n);
void cmr_pairs_free(cmr_pairs *d);
/* Reads the desc-tokens records of the streams (other records are ignored) and gives each
 * of d's images (loaded first) its description of each perspective; dies on a duplicate key,
 * a description without a '#', or more than CMR_MAX_PERSPECTIVES perspectives; warns of
 * descriptions whose image is not in d. */
void cmr_pairs_load_desc(cmr_pairs *d, char *const *inputs, int n);
/* Reads a teacher's embeddings of d's images (embedding records keyed by image key) and of
 * its captions (keyed by caption key) from the two streams (cmr-encode's output of any
 * model): every image and every caption of d (loaded first) must have one, all of one width;
 * dies naming what is missing (the count and the first key), a duplicate, or a bad record.
 * Records for other keys are ignored, with a warning. */
void cmr_pairs_load_teacher(cmr_pairs *d, const char *images, const char *texts);
/* Reads the classes of d's images from a text file of lines KEY<TAB>CLASS (a class is any
 * name; '#' starts a comment line): every image of d (loaded first) must have one; dies
 * naming the line of a malformed entry or a duplicate key, or what is missing (the count and
 * the first key); entries for other keys are left out with a warning. */
void cmr_pairs_load_labels(cmr_pairs *d, const char *path);

typedef struct cmr_run_opts {
	int batch;
	int epochs;                /* passes over the images, or steps */
	int64_t steps, max_steps;  /* max_steps: stop there as if interrupted (0: no) */
	int64_t warmup;            /* < 0: a tenth of the steps */
	int64_t save_every, eval_every, log_every;
	double lr, min_lr, wd, beta1, beta2, eps, clip;
	uint64_t seed;
	const cmr_loss_term *terms;
	int nterms;
	const cmr_ops *ops;
	const char *output;        /* the checkpoint directory */
	const char *resume;        /* go on from this directory's state, or NULL */
	const char *log;           /* JSON lines, or NULL */
	const char *provenance;    /* the run's provenance, compact JSON (model metadata) */
	const cmr_tuning *tuning;  /* write this tuning of a frozen base (cmr-tuning(5)), not the model */
	double pull;               /* a pool's key pull term weight (L2P's lambda) */
	int majority;              /* a pool: L2P's batch-wise selection (cmr_tuning_majority) */
	const cmr_loss_term *desc_terms; /* each description perspective's terms (the training
					  * pairs' descriptions, cmr_pairs_load_desc), or NULL */
	int ndesc_terms;
	const char *config_text, *pre_text; /* config.json and preprocessor_config.json, verbatim */
	size_t config_len, pre_len;
	const cmr_dist *dist;      /* data parallel over these ranks (NULL: one process): each
				    * computes its slice of every batch (cmr_step_ws's dist), the
				    * gradients are summed, every rank takes the same AdamW step;
				    * rank 0 alone logs, evaluates and writes checkpoints */
} cmr_run_opts;

/* Trains m (trainable flags set, values loaded, cmr_clip_grads done) on train (the whole of
 * it on every rank, under o->dist), evaluating
 * on eval (NULL: none) every eval_every steps and at the end. Returns the exit status: 0,
 * or 128 + the signal that stopped it (the checkpoint is saved). */
int cmr_run_train(cmr_clip *m, const cmr_run_opts *o, const cmr_pairs *train, const cmr_pairs *eval);

#endif
