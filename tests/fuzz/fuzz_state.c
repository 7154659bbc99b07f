/* fuzz_state.c - libFuzzer target: cmr-train's reader of a training state on --resume
 * (load_state in lib/model/run.c, cmr-checkpoint(5)): the safetensors container, its
 * metadata format, the counters, the moments of every trained parameter (names, dtypes,
 * sizes), the thread count, and the model file's step beside it. The source of run.c is
 * compiled in (its public functions renamed), so what is fuzzed is what cmr-train runs; a
 * fatal error (cmr_die) returns here through the front end's exit hook, so run it with
 * -detect_leaks=0 as fuzz_caption. The model is mkclip's "mini" preset, every parameter
 * trained, with random values; its model.safetensors records step 3.
 * Input: the bytes of train-state.safetensors. CMR_FUZZ_STATE_SEED=DIR writes a valid
 * checkpoint of this model at step 3 (run.c's own save) into DIR, for the seed corpus. */
#define cmr_run_train fuzz_state_run_train
#define cmr_pairs_load fuzz_state_pairs_load
#define cmr_pairs_free fuzz_state_pairs_free
#define cmr_pairs_load_desc fuzz_state_pairs_load_desc
#define cmr_pairs_load_teacher fuzz_state_pairs_load_teacher
#define cmr_pairs_load_labels fuzz_state_pairs_load_labels
#include "../../lib/model/run.c"
#undef cmr_run_train
#undef cmr_pairs_load
#undef cmr_pairs_free

#include <fcntl.h>
#include <setjmp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char mini_config[] =
	"{\"architectures\": [\"CLIPModel\"], \"model_type\": \"clip\", \"projection_dim\": 4,\n"
	" \"logit_scale_init_value\": 2.6592,\n"
	" \"text_config\": {\"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,\n"
	"  \"intermediate_size\": 16, \"vocab_size\": 64, \"max_position_embeddings\": 8,\n"
	"  \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05, \"eos_token_id\": 2},\n"
	" \"vision_config\": {\"hidden_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 2,\n"
	"  \"intermediate_size\": 16, \"image_size\": 8, \"patch_size\": 4, \"hidden_act\": \"quick_gelu\",\n"
	"  \"layer_norm_eps\": 1e-05}}\n";

static jmp_buf back;
static void on_exit_hook(int status)
{
	(void)status;
	longjmp(back, 1);
}

static cmr_run_opts fo;
static run_t fr;
static char dir[256], state_path[300];

static void remove_dir(void)
{
	static const char *const names[] = {"train-state.safetensors", "train-state.prev.safetensors",
					    "model.safetensors", "config.json", "preprocessor_config.json"};
	char p[400];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

static void setup(void)
{
	char err[1024];
	cmr_progname = "cmr-train";
	cmr_verbose = -1;
	cmr_clip_cfg cfg;
	if (cmr_clip_cfg_parse(mini_config, sizeof mini_config - 1, "config.json", &cfg, err, sizeof err) < 0)
		fprintf(stderr, "fuzz_state: %s\n", err), abort();
	cmr_clip *m = cmr_clip_new(&cfg);
	if (!m)
		abort();
	for (int i = 0; i < m->nparam; i++)
		m->param[i].flags |= CMR_PARAM_TRAIN;
	if (cmr_clip_init(m, 1, err, sizeof err) < 0 || cmr_clip_grads(m) < 0)
		fprintf(stderr, "fuzz_state: %s\n", err), abort();
	const char *seed = getenv("CMR_FUZZ_STATE_SEED");
	if (seed)
		snprintf(dir, sizeof dir, "%s", seed);
	else {
		const char *tmp = getenv("TMPDIR");
		snprintf(dir, sizeof dir, "%s/fuzz_state.XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(dir))
			abort();
		atexit(remove_dir);
	}
	fo = (cmr_run_opts){.batch = 4, .seed = 1, .output = dir, .ops = &cmr_ops_ref, .provenance = "{}",
			    .config_text = mini_config, .config_len = sizeof mini_config - 1, .pre_text = "{}",
			    .pre_len = 2};
	fr = (run_t){.o = &fo, .m = m, .total = 10, .spe = 2, .npairs = 8};
	fr.mom = calloc(m->ntrain + 1, sizeof *fr.mom);
	fr.vel = calloc(m->ntrain + 1, sizeof *fr.vel);
	if (!fr.mom || !fr.vel)
		abort();
	cmr_set_exit_hook(on_exit_hook);
	snprintf(state_path, sizeof state_path, "%s/train-state.safetensors", dir);
	if (setjmp(back) == 0)
		save(&fr, 3); /* the model file at step 3 beside every input (and the seed) */
	else
		abort();
	if (seed)
		exit(0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fr.m)
		setup();
	int fd = open(state_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
	if (fd < 0)
		return 0;
	ssize_t w = size ? write(fd, data, size) : 0;
	close(fd);
	if (w != (ssize_t)size)
		return 0;
	if (setjmp(back) == 0) {
		/* a state accepted is one of the model's step: the only one beside it is 3 */
		int64_t step = load_state(&fr, dir);
		if (step != 3)
			fprintf(stderr, "fuzz_state: a state of step %" PRId64 " was accepted beside a model of step 3\n",
				step), abort();
		if (getenv("CMR_FUZZ_STATE_SAY"))
			fprintf(stderr, "fuzz_state: accepted\n");
	}
	return 0;
}
