/* cmr-train - contrastive training of a CLIP model on the CPU: from a checkpoint or from a
 * config's random initialisation, on paired image and token records, writing checkpoints in
 * Hugging Face's layout (what cmr-encode reads) and a resumable training state. The front
 * end: options, the model and what of it is trained; the run itself is lib/model/run.c. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "eval.h"
#include "fe.h"
#include "util.h"
#include "model/levels.h"
#include "model/run.h"
#include "model/tuning.h"
#include "text/clip_tok.h"

static const cmr_tool tool = {
	"cmr-train",
	"(-m MODEL_DIR | --config CONFIG.json | --resume OUT_DIR) -o OUT_DIR [-b N]\n"
	"[--epochs N | --steps N] [--lr X] [--warmup N] [--loss infonce|vse] [--freeze GLOB]...\n"
	"[--train GLOB]... [--desc STREAM]... [--eval STREAM]... [--log FILE] [STREAM...]\n"
	"cmr-train -m BASE_DIR --text-prompts N --vision-prompts N [--deep] [--prompt-init PHRASE]\n"
	"[--train-logit-scale] -o TUNING_DIR [options] [STREAM...]\n"
	"cmr-train -m BASE_DIR --adapter parallel|sequential|lora|none [--adapter-width N|vision=N,text=N]\n"
	"[--multi-level N] [--inject N [--inject-width R]] -o TUNING_DIR [options] [STREAM...]",
	"Train a CLIP model with a contrastive loss on pairs of image records (cmr-decode, at the\n"
	"model's image size) and token records (cmr-caption-ingest), paired by key: the caption\n"
	"<image key>#<n> goes with the image <image key>. Each step takes B images in a seeded\n"
	"shuffled order and one of each image's captions, drawn per step. The model is written to\n"
	"OUT_DIR in Hugging Face's layout (config.json, preprocessor_config.json,\n"
	"model.safetensors), which cmr-encode -m reads, with train-state.safetensors (optimizer\n"
	"moments, step) for --resume. Every file is written under a temporary name and renamed.\n"
	"With prompts the base model is frozen and only the prompts train (and the logit scale\n"
	"with --train-logit-scale); OUT_DIR is then a tuning directory (cmr-tuning(5):\n"
	"adapter_config.json, adapter_model.safetensors, kilobytes) that cmr-encode applies\n"
	"to the same base.\n"
	"\nModel:\n"
	"  -m, --init DIR        start from this checkpoint\n"
	"      --config FILE     start from random weights for this config.json, initialised as\n"
	"                        transformers does (--seed)\n"
	"      --resume DIR      go on from the checkpoint and training state in DIR (the data,\n"
	"                        --batch, --seed and the schedule must be those of the first run)\n"
	"  -o, --output DIR      where checkpoints go (default with --resume: DIR)\n"
	"\nPrompt tuning (Zhang et al. 2024; CoOp's text and VPT's vision placement):\n"
	"      --text-prompts N  N trained vectors after the start token (positions 1..N);\n"
	"                        captions are cut to context - N tokens (said when it happens)\n"
	"      --vision-prompts N\n"
	"                        N trained vectors after the class token, before the pre-layernorm\n"
	"      --deep            a separate set per layer, replacing the prompt rows before each\n"
	"                        layer after the first\n"
	"      --prompt-init PHRASE\n"
	"                        the text prompts start as the token embeddings of PHRASE (its\n"
	"                        tokens fill the first rows; default: all N(0, 0.02))\n"
	"      --train-logit-scale\n"
	"                        the logit scale trains with the prompts (saved in the tuning)\n"
	"\nAdapters (MASAN's modality-specific adapters on the frozen base):\n"
	"      --adapter TYPE    bottleneck adapters in every layer: parallel (AdaptFormer: beside\n"
	"                        each MLP, reading its input, ReLU, a learnt scale from 0.1) or\n"
	"                        sequential (Houlsby: on each attention and MLP block's output,\n"
	"                        GELU, a learnt scale from 1) or lora (W + B A on the attention's\n"
	"                        q, k, v and out projections; cmr-encode merges it into the\n"
	"                        weights); up projections (B) start at zero, so step 0 is the base\n"
	"      --adapter-width N | vision=N,text=N\n"
	"                        the bottleneck (LoRA's rank), one for both towers or one per\n"
	"                        tower (0: none in that tower; default 16)\n"
	"      --adapter-capacity auto|given\n"
	"                        auto: split the two towers' budget (2 x the width) in the\n"
	"                        proportion of the effective ranks of the base's image and text\n"
	"                        features on the training data (printed); given (default): as given\n"
	"      --multi-level N   multi-level attention on both heads: the pooled rows of N layers\n"
	"                        spread over the tower (the last included), through its final layer\n"
	"                        norm, mixed by softmax with a learnt query, added to the pooled\n"
	"                        state through a gate from zero (N >= 2; printed)\n"
	"      --inject N        cross-level injection on both heads: a one-head cross-attention\n"
	"                        from the pooled state to every row of N earlier layers, added\n"
	"                        through a gate from zero; the base's weights untouched (printed)\n"
	"      --inject-width R  the injection's attention width (default 64, cut to the tower's)\n"
	"                        (--adapter none: these modules alone, no adapter in the layers;\n"
	"                        the default when only they are given)\n"
	"\nPrompt pool (APSE-IPIK's pool, L2P's keys; cmr-promptpool init makes one):\n"
	"      --pool DIR        train this pool's prompts and keys on its frozen base (-m, or the\n"
	"                        base it records): each image takes its top-k prompts by its query\n"
	"      --pull W          the keys' pull term: -W x the mean cosine of each image's chosen\n"
	"                        keys with its query (default 0.5; 0: the keys do not learn)\n"
	"      --majority        L2P's batch-wise selection: every image of a step takes the\n"
	"                        top-k prompts chosen most often in its batch (ties: the lower id;\n"
	"                        encoding still selects per image)\n"
	"      --recompute       keep only each layer's residual stream and recompute q, k, v and\n"
	"                        fc1's output in the backward pass: less memory, more time (B/32,\n"
	"                        8+8 prompts: 1.53 -> 0.99 GiB, +32%); when no layer weight\n"
	"                        trains, as with prompts\n"
	"\nDescriptions (APSE-IPIK's implicit knowledge; training only):\n"
	"      --desc STREAM     desc-tokens records (cmr-caption-ingest --desc) of the training\n"
	"                        images, keyed <image key>#<perspective>: each perspective (global,\n"
	"                        background, entities...) is aligned with the images by its own\n"
	"                        terms, added to the captions' loss; may be repeated\n"
	"      --desc-clip W     weight of each perspective's InfoNCE with the images (default 0.1)\n"
	"      --desc-trip W     weight of each perspective's VSE++ hinge, summed over the batch\n"
	"                        (default 0.001)\n"
	"      --desc-margin X   that hinge's margin (default 0.1)\n"
	"\nClass-wise learning (a source model for soft transfer):\n"
	"      --labels FILE     the training images' classes, lines KEY<TAB>CLASS: a class-wise\n"
	"                        term, supervised contrastive across modalities (the captions of an\n"
	"                        image's class are its positives, and its images a caption's)\n"
	"      --class-weight W  its weight (default 1), beside --loss's (--base-weight)\n"
	"\nSoft contrastive transfer from a teacher (Zeng et al. 2025; CLIP-KD's distillation):\n"
	"      --teacher-images STREAM, --teacher-texts STREAM\n"
	"                        a teacher's embeddings of the training images and captions\n"
	"                        (cmr-encode's output of any model, keyed as the training data;\n"
	"                        every image and caption needs one)\n"
	"      --soft-labels W   InfoNCE against relaxed labels (1 - a) I + a softmax(T / tau),\n"
	"                        T the teacher's cosine similarities (weight W)\n"
	"      --soft-alpha A    a (default 0.5; 0: plain InfoNCE)\n"
	"      --teacher-tau X   tau of the soft labels and of --distill-kl (default 0.05)\n"
	"      --relaxed-margin W\n"
	"                        relaxed margins (Kim et al.): the teacher's closeness weighs\n"
	"                        each cross-modal distance between pulling and a margin\n"
	"      --relaxed-sigma X, --relaxed-delta X\n"
	"                        its kernel width and margin (default 1, 1)\n"
	"      --selective W     InfoNCE with the pairs the teacher finds ambiguous weighing less\n"
	"      --selective-tau X how fast their weight falls with the teacher's margin (0.05)\n"
	"      --distill-kl W    KL of the teacher's similarity distributions from the student's\n"
	"      --distill-mse W   squared distance to the teacher's unit embeddings (same width)\n"
	"      --base-weight W   the weight of --loss's term beside them (default 1; 0: none)\n"
	"\nSchedule:\n"
	"  -b, --batch N         pairs per step (default 64)\n"
	"      --epochs N        passes over the images (default 1)\n"
	"      --steps N         steps in all, instead of --epochs\n"
	"      --max-steps N     stop after this step, saving, as if interrupted (the schedule\n"
	"                        still spans --steps or --epochs)\n"
	"      --lr X            peak learning rate (default 5e-4)\n"
	"      --min-lr X        learning rate at the end of the cosine (default 0)\n"
	"      --warmup N        linear warm-up steps (default: a tenth of the steps)\n"
	"      --wd X            AdamW weight decay of matrices and embeddings (default 0.2)\n"
	"      --beta1 X, --beta2 X, --adam-eps X\n"
	"                        AdamW's constants (default 0.9, 0.98, 1e-6, as CLIP)\n"
	"      --clip-grad X     clip the global gradient norm to X (default 1; 0: off)\n"
	"      --loss NAME       infonce (default: CLIP's symmetric loss with the learnt\n"
	"                        temperature) or vse (VSE++ hinge on the hardest negatives)\n"
	"      --margin X        the vse margin (default 0.2)\n"
	"      --freeze GLOB     keep the parameters whose names match GLOB (fnmatch, e.g.\n"
	"                        'vision_model.*') unchanged; may be repeated\n"
	"      --train GLOB      train only the parameters matching GLOB; may be repeated\n"
	"      --seed N          seed of the initialisation, the order and the captions (default 1)\n"
	"\nOutput:\n"
	"      --save-every N    write a checkpoint every N steps (default: at the end)\n"
	"      --eval STREAM     held-out image and token records: Recall@1,5,10 both ways\n"
	"                        (cmr-eval's protocol) every --eval-every steps and at the end;\n"
	"                        may be repeated\n"
	"      --eval-every N    (default: at the end only)\n"
	"      --log FILE        JSON lines: one per step, one per evaluation (appended on --resume)\n"
	"      --log-every N     a progress line on standard error every N steps (default 50;\n"
	"                        a line kept up to date on a terminal)\n"
	"      --backend NAME    blas (default), ref (plain loops, slow: the reference) or cuda\n"
	"                        (an NVIDIA GPU, in builds with CUDA: full training and\n"
	"                        prompts); list: this build's backends and whether each can\n"
	"                        start here\n"
	"      --device N        with --backend cuda: the GPU to train on (default 0)\n"
	"      --precision P     with --backend cuda: matrix products in fp32 (default), or on\n"
	"                        tensor cores with tf32 or bf16 roundings of their operands\n"
	"  -t, --threads N       BLAS threads (default: the number of cores, shared by the\n"
	"                        processes of an MPI run on the machine)\n"
	"\nStarted by mpirun or srun, the processes train data-parallel: each takes a slice of\n"
	"every batch, the gradients are summed, rank 0 writes (cmr-train(1), Data parallel).\n",
};

#define MAXGLOB 32

struct opts {
	const char *init, *config, *resume, *output, *log;
	int batch, epochs, threads;
	const cmr_dist *dist;
	int text_prompts, vision_prompts, deep, train_logit, recompute, majority;
	const char *adapter;
	int device, precision; /* --device, --precision */
	int adapter_width[2], adapter_width_given, adapter_auto;
	int levels, inject, inject_width;
	const char *pool;
	double pull;
	const char *prompt_init;
	const cmr_loss *loss;
	int64_t steps, max_steps, warmup, save_every, eval_every, log_every;
	double lr, min_lr, wd, beta1, beta2, eps, clip, margin;
	uint64_t seed;
	const char *freeze[MAXGLOB], *train[MAXGLOB];
	int nfreeze, ntrain;
	char *evals[MAXGLOB], *descs[MAXGLOB];
	int nevals, ndescs;
	double desc_clip, desc_trip, desc_margin;
	const char *teacher_img, *teacher_txt, *labels;
	double class_weight;
	double w_soft, soft_alpha, teacher_tau, w_relaxed, relaxed_sigma, relaxed_delta, w_sel, sel_tau, w_kl, w_mse;
	double base_weight;
	const cmr_ops *ops;
	char **inputs;
	int ninputs;
};

enum {
	OPT_CONFIG = 256, OPT_RESUME, OPT_EPOCHS, OPT_STEPS, OPT_MAXSTEPS, OPT_LR, OPT_MINLR, OPT_WARMUP, OPT_WD,
	OPT_B1, OPT_B2, OPT_EPS, OPT_CLIP, OPT_LOSS, OPT_MARGIN, OPT_FREEZE, OPT_TRAIN, OPT_SEED, OPT_SAVE,
	OPT_EVAL, OPT_EVALEVERY, OPT_LOG, OPT_LOGEVERY, OPT_BACKEND, OPT_DEVICE, OPT_PRECISION, OPT_TPROMPTS, OPT_VPROMPTS, OPT_DEEP,
	OPT_PINIT, OPT_TLOGIT, OPT_RECOMPUTE, OPT_POOL, OPT_PULL, OPT_DESC, OPT_DESC_CLIP, OPT_DESC_TRIP, OPT_DESC_MARGIN, OPT_MAJORITY, OPT_ADAPTER, OPT_ADAPTER_WIDTH, OPT_ADAPTER_CAP, OPT_LEVELS, OPT_INJECT, OPT_INJECT_WIDTH,
	OPT_T_IMG, OPT_T_TXT, OPT_SOFT, OPT_SOFT_ALPHA, OPT_T_TAU, OPT_RELAXED, OPT_R_SIGMA, OPT_R_DELTA, OPT_SEL, OPT_SEL_TAU,
	OPT_KL, OPT_MSE, OPT_BASE_W, OPT_LABELS, OPT_CLASS_W
};

/* --adapter-width: N, or vision=N,text=N (either may be left out: 0) */
static void parse_widths(const char *arg, int w[2])
{
	char *end;
	if (strchr(arg, '=') == NULL) {
		w[0] = w[1] = (int)cmr_parse_int("--adapter-width", arg, 1, CMR_TUNING_MAX_WIDTH);
		return;
	}
	w[0] = w[1] = 0;
	for (const char *s = arg; *s;) {
		int k = strncmp(s, "vision=", 7) == 0 ? 0 : strncmp(s, "text=", 5) == 0 ? 1 : -1;
		if (k < 0)
			cmr_usage_error("--adapter-width '%s': give N, or vision=N,text=N", arg);
		s += k ? 5 : 7;
		long v = strtol(s, &end, 10);
		if (end == s || v < 0 || v > CMR_TUNING_MAX_WIDTH || (*end && *end != ','))
			cmr_usage_error("--adapter-width '%s': a width is 0 to %d", arg, CMR_TUNING_MAX_WIDTH);
		w[k] = (int)v;
		s = *end ? end + 1 : end;
	}
	if (!w[0] && !w[1])
		cmr_usage_error("--adapter-width '%s': no tower has an adapter", arg);
}

static int is_tuning_dir(const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/" CMR_TUNING_CONFIG, dir);
	return access(path, F_OK) == 0;
}

static void parse_cmdline(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"init", required_argument, NULL, 'm'},
		{"config", required_argument, NULL, OPT_CONFIG},
		{"resume", required_argument, NULL, OPT_RESUME},
		{"output", required_argument, NULL, 'o'},
		{"batch", required_argument, NULL, 'b'},
		{"epochs", required_argument, NULL, OPT_EPOCHS},
		{"steps", required_argument, NULL, OPT_STEPS},
		{"max-steps", required_argument, NULL, OPT_MAXSTEPS},
		{"lr", required_argument, NULL, OPT_LR},
		{"min-lr", required_argument, NULL, OPT_MINLR},
		{"warmup", required_argument, NULL, OPT_WARMUP},
		{"wd", required_argument, NULL, OPT_WD},
		{"beta1", required_argument, NULL, OPT_B1},
		{"beta2", required_argument, NULL, OPT_B2},
		{"adam-eps", required_argument, NULL, OPT_EPS},
		{"clip-grad", required_argument, NULL, OPT_CLIP},
		{"loss", required_argument, NULL, OPT_LOSS},
		{"margin", required_argument, NULL, OPT_MARGIN},
		{"freeze", required_argument, NULL, OPT_FREEZE},
		{"train", required_argument, NULL, OPT_TRAIN},
		{"seed", required_argument, NULL, OPT_SEED},
		{"save-every", required_argument, NULL, OPT_SAVE},
		{"eval", required_argument, NULL, OPT_EVAL},
		{"eval-every", required_argument, NULL, OPT_EVALEVERY},
		{"log", required_argument, NULL, OPT_LOG},
		{"log-every", required_argument, NULL, OPT_LOGEVERY},
		{"backend", required_argument, NULL, OPT_BACKEND},
		{"device", required_argument, NULL, OPT_DEVICE},
		{"precision", required_argument, NULL, OPT_PRECISION},
		{"threads", required_argument, NULL, 't'},
		{"text-prompts", required_argument, NULL, OPT_TPROMPTS},
		{"vision-prompts", required_argument, NULL, OPT_VPROMPTS},
		{"deep", no_argument, NULL, OPT_DEEP},
		{"prompt-init", required_argument, NULL, OPT_PINIT},
		{"train-logit-scale", no_argument, NULL, OPT_TLOGIT},
		{"recompute", no_argument, NULL, OPT_RECOMPUTE},
		{"pool", required_argument, NULL, OPT_POOL},
		{"pull", required_argument, NULL, OPT_PULL},
		{"majority", no_argument, NULL, OPT_MAJORITY},
		{"adapter", required_argument, NULL, OPT_ADAPTER},
		{"adapter-width", required_argument, NULL, OPT_ADAPTER_WIDTH},
		{"adapter-capacity", required_argument, NULL, OPT_ADAPTER_CAP},
		{"multi-level", required_argument, NULL, OPT_LEVELS},
		{"inject", required_argument, NULL, OPT_INJECT},
		{"inject-width", required_argument, NULL, OPT_INJECT_WIDTH},
		{"teacher-images", required_argument, NULL, OPT_T_IMG},
		{"teacher-texts", required_argument, NULL, OPT_T_TXT},
		{"soft-labels", required_argument, NULL, OPT_SOFT},
		{"soft-alpha", required_argument, NULL, OPT_SOFT_ALPHA},
		{"teacher-tau", required_argument, NULL, OPT_T_TAU},
		{"relaxed-margin", required_argument, NULL, OPT_RELAXED},
		{"relaxed-sigma", required_argument, NULL, OPT_R_SIGMA},
		{"relaxed-delta", required_argument, NULL, OPT_R_DELTA},
		{"selective", required_argument, NULL, OPT_SEL},
		{"selective-tau", required_argument, NULL, OPT_SEL_TAU},
		{"distill-kl", required_argument, NULL, OPT_KL},
		{"distill-mse", required_argument, NULL, OPT_MSE},
		{"base-weight", required_argument, NULL, OPT_BASE_W},
		{"labels", required_argument, NULL, OPT_LABELS},
		{"class-weight", required_argument, NULL, OPT_CLASS_W},
		{"desc", required_argument, NULL, OPT_DESC},
		{"desc-clip", required_argument, NULL, OPT_DESC_CLIP},
		{"desc-trip", required_argument, NULL, OPT_DESC_TRIP},
		{"desc-margin", required_argument, NULL, OPT_DESC_MARGIN},
		CMR_COMMON_LONGOPTS,
		{NULL, 0, NULL, 0},
	};
	memset(o, 0, sizeof *o);
	o->batch = 64;
	o->warmup = -1;
	o->lr = 5e-4;
	o->wd = 0.2;
	o->beta1 = 0.9, o->beta2 = 0.98, o->eps = 1e-6;
	o->clip = 1.0;
	o->margin = 0.2;
	o->pull = -1;
	o->desc_clip = -1, o->desc_trip = -1, o->desc_margin = -1;
	o->loss = cmr_loss_find("infonce");
	o->soft_alpha = o->teacher_tau = o->relaxed_sigma = o->relaxed_delta = o->sel_tau = -1;
	o->base_weight = 1;
	o->class_weight = -1;
	o->seed = 1;
	o->log_every = 50;
	o->ops = &cmr_ops_blas;
	int c;
	while ((c = getopt_long(argc, argv, "m:o:b:t:" CMR_COMMON_SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o->init = cmr_parse_model(optarg); break;
		case OPT_CONFIG: o->config = optarg; break;
		case OPT_RESUME: o->resume = optarg; break;
		case 'o': o->output = optarg; break;
		case 'b': o->batch = (int)cmr_parse_int("--batch", optarg, 2, 1 << 16); break;
		case OPT_EPOCHS: o->epochs = (int)cmr_parse_int("--epochs", optarg, 1, 1 << 30); break;
		case OPT_STEPS: o->steps = cmr_parse_int("--steps", optarg, 1, INT64_MAX / 2); break;
		case OPT_MAXSTEPS: o->max_steps = cmr_parse_int("--max-steps", optarg, 1, INT64_MAX / 2); break;
		case OPT_LR: o->lr = cmr_parse_double("--lr", optarg, 0, 10); break;
		case OPT_MINLR: o->min_lr = cmr_parse_double("--min-lr", optarg, 0, 10); break;
		case OPT_WARMUP: o->warmup = cmr_parse_int("--warmup", optarg, 0, INT64_MAX / 2); break;
		case OPT_WD: o->wd = cmr_parse_double("--wd", optarg, 0, 10); break;
		case OPT_B1: o->beta1 = cmr_parse_double("--beta1", optarg, 0, 0.999999); break;
		case OPT_B2: o->beta2 = cmr_parse_double("--beta2", optarg, 0, 0.999999); break;
		case OPT_EPS: o->eps = cmr_parse_double("--adam-eps", optarg, 1e-30, 1); break;
		case OPT_CLIP: o->clip = cmr_parse_double("--clip-grad", optarg, 0, 1e30); break;
		case OPT_LOSS:
			if (!(o->loss = cmr_loss_find(optarg)) || o->loss->teacher)
				cmr_usage_error("--loss: '%s' is not infonce or vse (the teacher's terms have options of their "
						"own: --soft-labels ...)", optarg);
			break;
		case OPT_MARGIN: o->margin = cmr_parse_double("--margin", optarg, 0, 2); break;
		case OPT_FREEZE:
		case OPT_TRAIN:
			if ((c == OPT_FREEZE ? o->nfreeze : o->ntrain) == MAXGLOB)
				cmr_usage_error("at most %d --freeze and %d --train patterns", MAXGLOB, MAXGLOB);
			if (c == OPT_FREEZE)
				o->freeze[o->nfreeze++] = optarg;
			else
				o->train[o->ntrain++] = optarg;
			break;
		case OPT_SEED: o->seed = (uint64_t)cmr_parse_int("--seed", optarg, 0, INT64_MAX); break;
		case OPT_SAVE: o->save_every = cmr_parse_int("--save-every", optarg, 1, INT64_MAX / 2); break;
		case OPT_EVAL:
			if (o->nevals == MAXGLOB)
				cmr_usage_error("at most %d --eval streams", MAXGLOB);
			o->evals[o->nevals++] = optarg;
			break;
		case OPT_EVALEVERY: o->eval_every = cmr_parse_int("--eval-every", optarg, 1, INT64_MAX / 2); break;
		case OPT_LOG: o->log = optarg; break;
		case OPT_LOGEVERY: o->log_every = cmr_parse_int("--log-every", optarg, 1, INT64_MAX / 2); break;
		case OPT_BACKEND:
			o->ops = cmr_parse_backend(optarg);
			break;
		case OPT_DEVICE: o->device = (int)cmr_parse_int("--device", optarg, 0, 1023); break;
		case OPT_PRECISION: o->precision = cmr_parse_precision(optarg); break;
		case 't': o->threads = (int)cmr_parse_int("--threads", optarg, 1, 1024); break;
		case OPT_TPROMPTS:
			o->text_prompts = (int)cmr_parse_int("--text-prompts", optarg, 0, CMR_TUNING_MAX_PROMPTS);
			break;
		case OPT_VPROMPTS:
			o->vision_prompts = (int)cmr_parse_int("--vision-prompts", optarg, 0, CMR_TUNING_MAX_PROMPTS);
			break;
		case OPT_DEEP: o->deep = 1; break;
		case OPT_PINIT: o->prompt_init = optarg; break;
		case OPT_TLOGIT: o->train_logit = 1; break;
		case OPT_RECOMPUTE: o->recompute = 1; break;
		case OPT_POOL: o->pool = optarg; break;
		case OPT_PULL: o->pull = cmr_parse_double("--pull", optarg, 0, 100); break;
		case OPT_MAJORITY: o->majority = 1; break;
		case OPT_ADAPTER:
			if (strcmp(optarg, "parallel") != 0 && strcmp(optarg, "sequential") != 0 && strcmp(optarg, "lora") != 0 &&
			    strcmp(optarg, "none") != 0)
				cmr_usage_error("--adapter: '%s' is not parallel, sequential, lora or none", optarg);
			o->adapter = optarg;
			break;
		case OPT_ADAPTER_WIDTH: parse_widths(optarg, o->adapter_width), o->adapter_width_given = 1; break;
		case OPT_ADAPTER_CAP:
			if (strcmp(optarg, "auto") != 0 && strcmp(optarg, "given") != 0)
				cmr_usage_error("--adapter-capacity: '%s' is not auto or given", optarg);
			o->adapter_auto = strcmp(optarg, "auto") == 0;
			break;
		case OPT_T_IMG: o->teacher_img = optarg; break;
		case OPT_T_TXT: o->teacher_txt = optarg; break;
		case OPT_SOFT: o->w_soft = cmr_parse_double("--soft-labels", optarg, 0, 100); break;
		case OPT_SOFT_ALPHA: o->soft_alpha = cmr_parse_double("--soft-alpha", optarg, 0, 1); break;
		case OPT_T_TAU: o->teacher_tau = cmr_parse_double("--teacher-tau", optarg, 1e-4, 100); break;
		case OPT_RELAXED: o->w_relaxed = cmr_parse_double("--relaxed-margin", optarg, 0, 100); break;
		case OPT_R_SIGMA: o->relaxed_sigma = cmr_parse_double("--relaxed-sigma", optarg, 1e-4, 100); break;
		case OPT_R_DELTA: o->relaxed_delta = cmr_parse_double("--relaxed-delta", optarg, 0, 100); break;
		case OPT_SEL: o->w_sel = cmr_parse_double("--selective", optarg, 0, 100); break;
		case OPT_SEL_TAU: o->sel_tau = cmr_parse_double("--selective-tau", optarg, 1e-4, 100); break;
		case OPT_KL: o->w_kl = cmr_parse_double("--distill-kl", optarg, 0, 100); break;
		case OPT_MSE: o->w_mse = cmr_parse_double("--distill-mse", optarg, 0, 100); break;
		case OPT_BASE_W: o->base_weight = cmr_parse_double("--base-weight", optarg, 0, 100); break;
		case OPT_LABELS: o->labels = optarg; break;
		case OPT_CLASS_W: o->class_weight = cmr_parse_double("--class-weight", optarg, 0, 100); break;
		case OPT_LEVELS: o->levels = (int)cmr_parse_int("--multi-level", optarg, 2, CMR_TUNING_MAX_LEVELS); break;
		case OPT_INJECT: o->inject = (int)cmr_parse_int("--inject", optarg, 1, CMR_TUNING_MAX_LEVELS); break;
		case OPT_INJECT_WIDTH:
			o->inject_width = (int)cmr_parse_int("--inject-width", optarg, 1, CMR_TUNING_MAX_WIDTH);
			break;
		case OPT_DESC:
			if (o->ndescs == MAXGLOB)
				cmr_usage_error("at most %d --desc streams", MAXGLOB);
			o->descs[o->ndescs++] = optarg;
			break;
		case OPT_DESC_CLIP: o->desc_clip = cmr_parse_double("--desc-clip", optarg, 0, 100); break;
		case OPT_DESC_TRIP: o->desc_trip = cmr_parse_double("--desc-trip", optarg, 0, 100); break;
		case OPT_DESC_MARGIN: o->desc_margin = cmr_parse_double("--desc-margin", optarg, 0, 2); break;
		default:
			if (!cmr_common_option(c))
				cmr_usage_error("unhandled option");
		}
	}
	o->inputs = argv + optind;
	o->ninputs = argc - optind;
	if (o->inject_width && !o->inject)
		cmr_usage_error("--inject-width goes with --inject N");
	if (!o->inject_width)
		o->inject_width = 64;
	if ((o->levels || o->inject) && !o->adapter)
		o->adapter = "none"; /* the head's modules alone */
	int none = o->adapter && strcmp(o->adapter, "none") == 0;
	if (none && !o->levels && !o->inject)
		cmr_usage_error("--adapter none: give --multi-level N or --inject N (the modules on the heads)");
	if (none && (o->adapter_width_given || o->adapter_auto))
		cmr_usage_error("--adapter none has no width: --adapter-width and --adapter-capacity go with a type");
	if ((o->adapter_width_given || o->adapter_auto) && !o->adapter)
		cmr_usage_error("--adapter-width and --adapter-capacity go with --adapter TYPE");
	if (o->adapter_auto && o->adapter_width_given && o->adapter_width[0] != o->adapter_width[1])
		cmr_usage_error("--adapter-capacity auto sets the two widths: give one --adapter-width N (the budget per "
				"tower), not two");
	if (!(o->ops->caps & CMR_OPS_HOST) && (o->adapter || o->pool))
		cmr_usage_error("--backend %s: %s on a host backend only, for now (blas or ref); prompts and full "
				"training run on it", o->ops->name,
				o->pool ? "a prompt pool is tuned" : "adapters and the heads' modules train");
	if (o->adapter && !o->adapter_width_given && !none)
		o->adapter_width[0] = o->adapter_width[1] = 16;
	if (o->adapter && (o->text_prompts || o->vision_prompts || o->pool || o->config || o->resume || o->deep ||
			   o->prompt_init || o->ntrain || o->nfreeze))
		cmr_usage_error("--adapter tunes a frozen base: no prompts, pool, --config, --resume (resume the output "
				"directory alone), --train or --freeze with it");
	if (o->adapter && !o->init)
		cmr_usage_error("--adapter tunes a trained base: give -m BASE_DIR");
	int prompts = o->text_prompts || o->vision_prompts || o->adapter;
	if (o->pool && (prompts || o->config || o->resume || o->deep || o->prompt_init || o->ntrain || o->nfreeze))
		cmr_usage_error("--pool trains a pool on its frozen base: no prompts, --config, --resume (resume the output "
				"directory instead), --train or --freeze with it");
	if (o->pull >= 0 && !o->pool && !(o->resume && is_tuning_dir(o->resume)))
		cmr_usage_error("--pull weighs a pool's key term: it goes with --pool");
	if (o->majority && !o->pool && !(o->resume && is_tuning_dir(o->resume)))
		cmr_usage_error("--majority is a pool's selection: it goes with --pool");
	if (o->pool && !o->output)
		cmr_usage_error("--pool needs -o DIR: the trained pool (the one given is not changed)");
	if ((o->deep || o->prompt_init) && !(o->text_prompts || o->vision_prompts))
		cmr_usage_error("--deep and --prompt-init go with --text-prompts or --vision-prompts");
	if (o->train_logit && !prompts)
		cmr_usage_error("--train-logit-scale goes with --text-prompts, --vision-prompts or --adapter");
	if (o->prompt_init && !o->text_prompts)
		cmr_usage_error("--prompt-init initialises text prompts: give --text-prompts N");
	if (prompts && (o->ntrain || o->nfreeze))
		cmr_usage_error("a prompt tuning trains the prompts only: no --train or --freeze");
	if (prompts && o->config)
		cmr_usage_error("prompts tune a trained base: give -m BASE_DIR, not --config");
	if (prompts && o->resume)
		cmr_usage_error("--resume takes the prompts' lengths from the tuning: give them once");
	if (o->resume && o->init && !is_tuning_dir(o->resume))
		cmr_usage_error("-m BASE_DIR goes with --resume of a tuning directory only");
	if (!!o->init + !!o->config + !!o->resume != 1 && !(o->resume && o->init) && !(o->pool && !o->init))
		cmr_usage_error("give one of -m DIR, --config FILE and --resume DIR");
	if (o->resume && !o->output)
		o->output = o->resume;
	if (!o->output)
		cmr_usage_error("give the checkpoint directory: -o DIR");
	if (o->epochs && o->steps)
		cmr_usage_error("give --epochs or --steps, not both");
	if ((o->desc_clip >= 0 || o->desc_trip >= 0 || o->desc_margin >= 0) && !o->ndescs)
		cmr_usage_error("--desc-clip, --desc-trip and --desc-margin weigh the description terms: give --desc STREAM");
	if (o->desc_clip < 0)
		o->desc_clip = 0.1;
	if (o->desc_trip < 0)
		o->desc_trip = 0.001;
	if (o->desc_margin < 0)
		o->desc_margin = 0.1;
	if (o->ndescs && o->desc_clip == 0 && o->desc_trip == 0)
		cmr_usage_error("--desc-clip 0 and --desc-trip 0 leave the descriptions nothing to do");
	int teaching = o->w_soft > 0 || o->w_relaxed > 0 || o->w_sel > 0 || o->w_kl > 0 || o->w_mse > 0;
	if (!!o->teacher_img != !!o->teacher_txt)
		cmr_usage_error("give the teacher's embeddings of both: --teacher-images and --teacher-texts");
	if (teaching && !o->teacher_img)
		cmr_usage_error("--soft-labels, --relaxed-margin, --selective, --distill-kl and --distill-mse learn from a "
				"teacher: give --teacher-images and --teacher-texts");
	if (o->teacher_img && !teaching)
		cmr_usage_error("the teacher's embeddings are for a term: give --soft-labels, --relaxed-margin, --selective, "
				"--distill-kl or --distill-mse W");
	if ((o->soft_alpha >= 0 && !(o->w_soft > 0)) || (o->teacher_tau >= 0 && !(o->w_soft > 0 || o->w_kl > 0)) ||
	    ((o->relaxed_sigma >= 0 || o->relaxed_delta >= 0) && !(o->w_relaxed > 0)) || (o->sel_tau >= 0 && !(o->w_sel > 0)))
		cmr_usage_error("--soft-alpha, --teacher-tau, --relaxed-sigma, --relaxed-delta and --selective-tau go with "
				"their terms (--soft-labels, --distill-kl, --relaxed-margin, --selective W)");
	if (o->soft_alpha < 0)
		o->soft_alpha = 0.5;
	if (o->teacher_tau < 0)
		o->teacher_tau = 0.05;
	if (o->relaxed_sigma < 0)
		o->relaxed_sigma = 1;
	if (o->relaxed_delta < 0)
		o->relaxed_delta = 1;
	if (o->sel_tau < 0)
		o->sel_tau = 0.05;
	if (o->class_weight >= 0 && !o->labels)
		cmr_usage_error("--class-weight weighs the class-wise term: give --labels FILE");
	if (o->class_weight < 0)
		o->class_weight = 1;
	if (o->labels && o->class_weight == 0)
		cmr_usage_error("--class-weight 0 leaves the classes nothing to do");
	if (o->base_weight == 0 && !teaching && !o->labels)
		cmr_usage_error("--base-weight 0 leaves no loss term");
	if (o->eval_every && !o->nevals)
		cmr_usage_error("--eval-every needs --eval STREAM");
	if (o->min_lr > o->lr)
		cmr_usage_error("--min-lr %g is above --lr %g", o->min_lr, o->lr);
	if (!o->epochs && !o->steps)
		o->epochs = 1;
}

/* the text prompts' initial rows: the phrase's token embeddings */
static void init_phrase(cmr_clip *m, const char *phrase)
{
	char err[1024];
	cmr_clip_tok *tk = cmr_clip_tok_new(err, sizeof err);
	if (!tk)
		cmr_die("%s", err);
	int32_t ids[CMR_CLIP_CONTEXT];
	int trunc = 0, n = cmr_clip_tokenize(tk, phrase, strlen(phrase), CMR_CLIP_CONTEXT, ids, &trunc);
	cmr_clip_tok_free(tk);
	if (n < 0)
		cmr_die("out of memory");
	if (n <= 2 || trunc)
		cmr_usage_error("--prompt-init '%s': %s", phrase, trunc ? "too long" : "no tokens");
	if (cmr_tuning_init_phrase(m, ids + 1, n - 2, err, sizeof err) < 0)
		cmr_usage_error("--prompt-init '%s': %s", phrase, err);
	cmr_info("text prompts: the first %d of %d are '%s'", n - 2, m->tower[CMR_TOWER_TEXT].nprefix, phrase);
}

/* the model and what of it trains, for a full run: flags from --train and --freeze */
static size_t select_trained(cmr_clip *m, const struct opts *o)
{
	size_t ntrain = 0;
	for (int i = 0; i < m->nparam; i++) {
		cmr_param *p = &m->param[i];
		int fz = o->ntrain > 0;
		for (int j = 0; j < o->ntrain; j++)
			if (fnmatch(o->train[j], p->name, 0) == 0)
				fz = 0;
		for (int j = 0; j < o->nfreeze; j++)
			if (fnmatch(o->freeze[j], p->name, 0) == 0)
				fz = 1;
		if (!fz)
			p->flags |= CMR_PARAM_TRAIN;
		ntrain += fz ? 0 : p->n;
	}
	return ntrain;
}

/* --adapter-capacity auto: the two towers' widths from the effective rank of the frozen
 * base's features on the training data (the pooled states before the projections, of up
 * to 1024 images and one caption each), splitting the budget of both towers at the width
 * given (2 x N) in their proportion */
static void adapter_capacity(const struct opts *o, const cmr_clip_cfg *cfg, const char *base, const cmr_pairs *d,
			     int width[2])
{
	char err[1024], path[4096];
	cmr_clip *m = cmr_clip_new(cfg);
	snprintf(path, sizeof path, "%s/%s", base, cmr_clip_weights_name(cfg));
	if (!m || cmr_clip_load(m, path, CMR_TOWERS_BOTH, 0, err, sizeof err) < 0)
		cmr_die("%s", m ? err : "out of memory");
	size_t n = d->nimg < 1024 ? d->nimg : 1024;
	int B = 32, D[2] = {cfg->vision.width, cfg->text.width};
	double er[2];
	cmr_clip_ws *ws[2] = {cmr_clip_ws_new(m, o->ops, CMR_TOWER_VISION, B, 0, 0),
			      cmr_clip_ws_new(m, o->ops, CMR_TOWER_TEXT, B, B * cfg->text.context, 0)};
	float *out = malloc((size_t)B * cfg->proj * sizeof *out);
	if (!ws[0] || !ws[1] || !out)
		cmr_die("out of memory");
	for (int k = 0; k < 2; k++) {
		float *x = malloc(n * (size_t)D[k] * sizeof *x);
		if (!x)
			cmr_die("out of memory");
		for (size_t i = 0; i < n; i += (size_t)B) {
			int nb = (int)(n - i < (size_t)B ? n - i : (size_t)B);
			const uint8_t *px[32];
			const int32_t *ids[32];
			int lens[32];
			for (int b = 0; b < nb; b++) {
				const cmr_pair_image *im = &d->img[i + b];
				px[b] = im->px, ids[b] = d->tok[im->cap[0]], lens[b] = d->len[im->cap[0]];
			}
			cmr_batch bt = k == CMR_TOWER_VISION ? (cmr_batch){.B = nb, .pixels = px, .state = x + i * D[k]}
							     : (cmr_batch){.B = nb, .ids = ids, .lens = lens, .state = x + i * D[k]};
			if (cmr_clip_forward(m, k, o->ops, ws[k], &bt, out) < 0)
				cmr_die("--adapter-capacity auto: the base's forward pass failed");
		}
		if ((er[k] = cmr_effective_rank(x, n, D[k])) < 0)
			cmr_die("--adapter-capacity auto: no effective rank of %zu %s features", n, k ? "text" : "image");
		free(x);
		cmr_clip_ws_free(ws[k]);
	}
	free(out);
	cmr_clip_free(m);
	int total = width[0] + width[1];
	width[0] = (int)lround(total * er[0] / (er[0] + er[1]));
	width[0] = width[0] < 1 ? 1 : width[0] > total - 1 ? total - 1 : width[0];
	width[1] = total - width[0];
	if (cmr_verbose >= 0)
		fprintf(stderr, "%s: adapter capacity: the base's features on %zu training pairs have effective rank %.1f of %d "
				"(images) and %.1f of %d (texts): widths vision=%d,text=%d\n",
			cmr_progname, n, er[0], D[0], er[1], D[1], width[0], width[1]);
}

static int run(struct opts *o, int argc, char **argv)
{
	char err[1024], path[4096];
	cmr_tuning tun;
	memset(&tun, 0, sizeof tun);
	int tuning = o->text_prompts || o->vision_prompts || o->pool || o->adapter || (o->resume && is_tuning_dir(o->resume));
	const char *src = o->init ? o->init : o->resume ? o->resume : o->config;
	const char *from = o->resume ? o->resume : o->pool; /* a tuning that says what it is */
	if (tuning && from) { /* the tuning says what it is and on which base */
		if (cmr_tuning_read(from, &tun, err, sizeof err) < 0)
			cmr_die("%s", err);
		if (o->pool && strcmp(tun.method, "pool") != 0)
			cmr_die("%s: a tuning of method '%s', not a pool (cmr-promptpool init makes one)", o->pool, tun.method);
		if (o->init)
			snprintf(tun.base, sizeof tun.base, "%s", o->init);
		if (!tun.base[0])
			cmr_die("%s: no base model recorded: give it with -m BASE_DIR", from);
		src = tun.base;
	} else if (o->adapter) {
		snprintf(tun.method, sizeof tun.method, "adapter");
		snprintf(tun.adapter_type, sizeof tun.adapter_type, "%s", o->adapter);
		tun.adapter_width[0] = o->adapter_width[0], tun.adapter_width[1] = o->adapter_width[1];
		tun.levels = o->levels, tun.inject = o->inject, tun.inject_width = o->inject ? o->inject_width : 0;
		tun.logit_scale = o->train_logit;
		snprintf(tun.base, sizeof tun.base, "%s", o->init);
	} else if (tuning) {
		snprintf(tun.method, sizeof tun.method, "prompts");
		tun.text_prompts = o->text_prompts, tun.vision_prompts = o->vision_prompts;
		tun.deep = o->deep, tun.logit_scale = o->train_logit;
		snprintf(tun.init, sizeof tun.init, "%s", o->prompt_init ? o->prompt_init : "");
		snprintf(tun.base, sizeof tun.base, "%s", o->init);
	}
	cmr_clip_cfg cfg;
	if (cmr_clip_cfg_load(src, &cfg, err, sizeof err) < 0)
		cmr_die("%s", err);
	char *config_text = NULL, *pre_text = NULL;
	size_t config_len = 0, pre_len = 0;
	if (!tuning) { /* the config travels verbatim; the preprocessor config too when there is one */
		if (o->config)
			snprintf(path, sizeof path, "%s", o->config);
		else
			snprintf(path, sizeof path, "%s/config.json", src);
		if (cfg.layout == CMR_LAYOUT_OPENCLIP) { /* saved in transformers' layout: its config */
			if (!(config_text = cmr_clip_cfg_hf_json(&cfg)))
				cmr_die("out of memory");
			config_len = strlen(config_text);
		} else if (!(config_text = cmr_read_file(path, CMR_CONFIG_MAX, &config_len, err, sizeof err)))
			cmr_die("%s", err);
		if (!o->config && cfg.layout != CMR_LAYOUT_OPENCLIP) {
			snprintf(path, sizeof path, "%s/preprocessor_config.json", src);
			pre_text = cmr_read_file(path, CMR_CONFIG_MAX, &pre_len, err, sizeof err);
		}
		if (!pre_text) {
			json_t *p = json_pack("{s:i, s:b, s:b, s:b, s:[f,f,f], s:[f,f,f], s:i, s:i}", "crop_size",
					      cfg.vision.image_size, "do_center_crop", 1, "do_normalize", 1, "do_resize", 1,
					      "image_mean", (double)cfg.mean[0], (double)cfg.mean[1], (double)cfg.mean[2],
					      "image_std", (double)cfg.std[0], (double)cfg.std[1], (double)cfg.std[2],
					      "resample", 3, "size", cfg.vision.image_size);
			pre_text = json_dumps(p, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
			pre_len = strlen(pre_text);
			json_decref(p);
		}
	}
	/* data */
	cmr_pairs d = {.size = cfg.vision.image_size, .features = cfg.vision.features, .context = cfg.text.context, .vocab = cfg.text.vocab, .what = "training"};
	cmr_pairs_load(&d, o->inputs, o->ninputs);
	if (o->adapter_auto)
		adapter_capacity(o, &cfg, src, &d, tun.adapter_width);
	for (int k = 0; k < 2 && (tun.levels || tun.inject) && cmr_verbose >= 0 && !o->resume; k++) {
		const cmr_tower_cfg *tc = k == CMR_TOWER_VISION ? &cfg.vision : &cfg.text;
		int lay[CMR_LEVELS_MAX], n;
		char buf[256];
		for (int inj = 0; inj < 2; inj++) {
			if (!(inj ? tun.inject : tun.levels))
				continue;
			n = inj ? cmr_inject_layers(tc->layers, tun.inject, lay) : cmr_levels_layers(tc->layers, tun.levels, lay);
			size_t at = 0;
			for (int j = 0; j < n && at < sizeof buf - 8; j++)
				at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%d", j ? ", " : "", lay[j]);
			if (inj)
				fprintf(stderr, "%s: %s head: injection from layers %s of %d (0-based), width %d\n", cmr_progname,
					k ? "text" : "vision", n ? buf : "(none)", tc->layers,
					tun.inject_width < tc->width ? tun.inject_width : tc->width);
			else
				fprintf(stderr, "%s: %s head: multi-level attention over layers %s of %d (0-based)\n",
					cmr_progname, k ? "text" : "vision", buf, tc->layers);
		}
	}
	cmr_clip *m = cmr_clip_new(&cfg);
	if (!m)
		cmr_die("out of memory for the model");
	/* what is trained: flags before loading, so that frozen weights stay in the mapping */
	if (tuning) {
		if (cmr_tuning_add(m, &tun, 1, err, sizeof err) < 0)
			cmr_die("%s: %s", o->resume ? o->resume : src, err);
	} else if (!select_trained(m, o)) {
		cmr_die("--freeze and --train leave no parameter to train");
	}
	if (o->config) {
		if (cmr_clip_init(m, o->seed, err, sizeof err) < 0)
			cmr_die("%s", err);
	} else {
		snprintf(path, sizeof path, "%s/%s", src, cmr_clip_weights_name(&cfg));
		if (cmr_clip_load(m, path, CMR_TOWERS_BOTH, o->seed, err, sizeof err) < 0)
			cmr_die("%s", err);
		cmr_clip_set_name(m, src);
	}
	if (tuning && from) { /* the values to go on from: the run's, or the pool given */
		if (cmr_tuning_load(m, &tun, from, CMR_TOWERS_BOTH, err, sizeof err) < 0)
			cmr_die("%s", err);
	} else if (tuning && o->prompt_init) {
		init_phrase(m, o->prompt_init);
	}
	if (cmr_clip_grads(m) < 0)
		cmr_die("out of memory for the gradients");
	m->recompute = o->recompute;
	if (o->recompute && strcmp(tun.method, "adapter") == 0)
		cmr_warn("--recompute applies when no module reads the layers' activations (adapters do): nothing is "
			 "recomputed");
	for (int i = 0; o->recompute && strcmp(tun.method, "adapter") != 0 && i < m->nparam; i++)
		if (m->param[i].g && m->param[i].layer >= 0 && m->param[i].slot >= 0 && m->param[i].slot != CMR_L_PROMPT) {
			cmr_warn("--recompute applies when no layer weight trains (%s does): nothing is recomputed",
				 m->param[i].name);
			break;
		}
	cmr_pairs ev = {.size = cfg.vision.image_size, .features = cfg.vision.features, .context = cfg.text.context, .vocab = cfg.text.vocab, .what = "evaluation"};
	if (o->nevals)
		cmr_pairs_load(&ev, o->evals, o->nevals);
	cmr_loss_term dterms[2];
	int ndterms = 0;
	if (o->ndescs) {
		cmr_pairs_load_desc(&d, o->descs, o->ndescs);
		if (o->desc_clip > 0)
			dterms[ndterms++] = (cmr_loss_term){.loss = cmr_loss_find("infonce"), .weight = o->desc_clip, .margin = 0};
		if (o->desc_trip > 0)
			dterms[ndterms++] = (cmr_loss_term){.loss = cmr_loss_find("vse"), .weight = o->desc_trip, .margin = (float)o->desc_margin};
		char line[1024];
		int at = 0;
		for (int p = 0; p < d.npersp && at < (int)sizeof line - 1; p++)
			at += snprintf(line + at, sizeof line - (size_t)at, "%s'%s' %zu", p ? ", " : "", d.persp[p],
				       d.persp_count[p]);
		if (cmr_verbose >= 0)
			fprintf(stderr, "%s: descriptions of %d perspectives, images with one: %s (of %zu)\n", cmr_progname,
				d.npersp, line, d.nimg);
	}
	for (int k = 0; tun.text_prompts && k < 2; k++) {
		const cmr_pairs *pp = k ? &ev : &d;
		size_t cut = 0;
		for (size_t t = 0; t < pp->ntok; t++)
			cut += pp->len[t] + tun.text_prompts > cfg.text.context;
		if (cut)
			cmr_warn("%zu of %zu %s captions are cut to %d tokens to make room for %d text prompts", cut,
				 pp->ntok, pp->what, cfg.text.context - tun.text_prompts, tun.text_prompts);
	}
	if (o->threads)
		cmr_ops_set_threads(o->threads);
	/* the captions' terms: --loss's, and the teacher's */
	cmr_loss_term terms[7];
	int nterms = 0;
	if (o->labels) {
		cmr_pairs_load_labels(&d, o->labels);
		terms[nterms++] = (cmr_loss_term){.loss = cmr_loss_find("class"), .weight = o->class_weight};
		if (cmr_verbose >= 0)
			fprintf(stderr, "%s: %d classes over the %zu training images\n", cmr_progname, d.nclass, d.nimg);
	}
	if (o->base_weight > 0)
		terms[nterms++] = (cmr_loss_term){.loss = o->loss, .weight = o->base_weight, .margin = (float)o->margin};
	if (o->teacher_img) {
		cmr_pairs_load_teacher(&d, o->teacher_img, o->teacher_txt);
		if (o->w_mse > 0 && d.teacher_dim != cfg.proj)
			cmr_die("--distill-mse compares embeddings of one width: the teacher's have %d values, the model's %d "
				"(the similarity terms take any width)", d.teacher_dim, cfg.proj);
		if (cmr_verbose >= 0)
			fprintf(stderr, "%s: a teacher's embeddings of %zu images and their captions, %d values each\n",
				cmr_progname, d.nimg, d.teacher_dim);
		struct { double w; const char *name; } tt[5] = {{o->w_soft, "soft-labels"}, {o->w_relaxed, "relaxed-margin"},
			{o->w_sel, "selective"}, {o->w_kl, "distill-kl"}, {o->w_mse, "distill-mse"}};
		for (int i = 0; i < 5; i++)
			if (tt[i].w > 0)
				terms[nterms++] = (cmr_loss_term){.loss = cmr_loss_find(tt[i].name), .weight = tt[i].w,
								  .margin = (float)o->relaxed_delta, .alpha = (float)o->soft_alpha,
								  .tau = (float)(i == 2 ? o->sel_tau : o->teacher_tau),
								  .sigma = (float)o->relaxed_sigma};
	}
	char *prov = cmr_provenance(argc, argv, (const char *const *)o->inputs, o->ninputs);
	cmr_run_opts ro = {
		.batch = o->batch, .epochs = o->epochs, .steps = o->steps, .max_steps = o->max_steps, .warmup = o->warmup,
		.save_every = o->save_every, .eval_every = o->eval_every, .log_every = o->log_every, .lr = o->lr,
		.min_lr = o->min_lr, .wd = o->wd, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps, .clip = o->clip,
		.seed = o->seed, .terms = terms, .nterms = nterms, .ops = o->ops, .output = o->output, .resume = o->resume,
		.log = o->log, .provenance = prov, .tuning = tuning ? &tun : NULL, .pull = o->pull >= 0 ? o->pull : 0.5,
		.majority = o->majority, .desc_terms = ndterms ? dterms : NULL, .ndesc_terms = ndterms,
		.config_text = config_text,
		.config_len = config_len, .pre_text = pre_text, .pre_len = pre_len, .dist = o->dist,
	};
	int rc = cmr_run_train(m, &ro, &d, o->nevals ? &ev : NULL);
	free(prov), free(config_text), free(pre_text);
	cmr_pairs_free(&d);
	cmr_pairs_free(&ev);
	cmr_clip_free(m);
	return rc;
}

/* under an MPI launcher (mpirun -np N, srun): every input is a file each rank reads */
static void check_dist(const struct opts *o)
{
	const char *std = o->ninputs ? NULL : "the training pairs";
	for (int i = 0; i < o->ninputs; i++)
		std = strcmp(o->inputs[i], "-") == 0 ? "the training pairs" : std;
	for (int i = 0; i < o->nevals; i++)
		std = strcmp(o->evals[i], "-") == 0 ? "--eval" : std;
	for (int i = 0; i < o->ndescs; i++)
		std = strcmp(o->descs[i], "-") == 0 ? "--desc" : std;
	if (o->labels && strcmp(o->labels, "-") == 0)
		std = "--labels";
	if ((o->teacher_img && strcmp(o->teacher_img, "-") == 0) || (o->teacher_txt && strcmp(o->teacher_txt, "-") == 0))
		std = "the teacher's embeddings";
	if (!(o->ops->caps & CMR_OPS_HOST))
		cmr_usage_error("--backend %s: data-parallel training over MPI runs on a host backend (blas or ref)",
				o->ops->name);
	if (std)
		cmr_usage_error("%s: every MPI rank reads its inputs, so they must be files, not standard input", std);
}

int main(int argc, char **argv)
{
	struct opts o;
	cmr_dist dist;
	char err[512];
	cmr_init(argc, argv, &tool);
	if (cmr_dist_init(&dist, &argc, &argv, err, sizeof err) < 0)
		cmr_die("%s", err);
	parse_cmdline(argc, argv, &o);
	if (dist.size > 1) {
		check_dist(&o);
		if (dist.rank > 0)
			cmr_verbose = -1; /* rank 0 speaks for the run */
		if (!o.threads) { /* the machine's cores shared by its ranks */
			long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
			o.threads = ncpu / dist.local_size > 1 ? (int)(ncpu / dist.local_size) : 1;
		}
		if (cmr_verbose >= 0)
			fprintf(stderr, "%s: data parallel over %d MPI processes (%d here), %d threads each\n", cmr_progname,
				dist.size, dist.local_size, o.threads);
	}
	o.dist = &dist;
	cmr_start_backend(o.ops, o.device, o.precision);
	int rc = run(&o, argc, argv);
	cmr_dist_finish(&dist);
	return cmr_exit(rc);
}
