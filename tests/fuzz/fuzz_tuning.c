/* fuzz_tuning.c - libFuzzer target: a tuning's adapter_config.json parser
 * (lib/model/tuning.c) on arbitrary bytes, prompts, a pool or adapters (with the head's
 * modules), and its lengths checked against a model's config. */
#include <stdint.h>
#include <string.h>

#include "model/tuning.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_tuning t;
	char err[512];
	if (cmr_tuning_parse((const char *)data, size, "fuzz", &t, err, sizeof err) < 0)
		return 0;
	/* what a parsed tuning promises: a pool's sizes, or prompt counts */
	if (strcmp(t.method, "pool") == 0) {
		if (t.pool_size < 1 || t.pool_size > CMR_TUNING_MAX_POOL || t.pool_length < 1 || t.pool_topk < 1 ||
		    t.pool_topk > t.pool_size || t.pool_topk * t.pool_length > CMR_TUNING_MAX_PROMPTS || t.deep ||
		    t.text_prompts || t.vision_prompts)
			__builtin_trap();
		cmr_clip_cfg pc;
		memset(&pc, 0, sizeof pc);
		pc.text.context = 77;
		if (cmr_tuning_check(&t, &pc, err, sizeof err) != 0)
			__builtin_trap();
		return 0;
	}
	if (strcmp(t.method, "adapter") == 0) {
		int none = strcmp(t.adapter_type, "none") == 0, head = t.levels || t.inject;
		if ((strcmp(t.adapter_type, "parallel") != 0 && strcmp(t.adapter_type, "sequential") != 0 &&
		     strcmp(t.adapter_type, "lora") != 0 && !none) ||
		    t.adapter_width[0] < 0 || t.adapter_width[1] < 0 || t.adapter_width[0] > CMR_TUNING_MAX_WIDTH ||
		    t.adapter_width[1] > CMR_TUNING_MAX_WIDTH || !(t.adapter_width[0] || t.adapter_width[1] || head) ||
		    (none && (t.adapter_width[0] || t.adapter_width[1] || !head)) || t.levels < 0 || t.levels == 1 ||
		    t.levels > CMR_TUNING_MAX_LEVELS || t.inject < 0 || t.inject > CMR_TUNING_MAX_LEVELS ||
		    (t.inject && (t.inject_width < 1 || t.inject_width > CMR_TUNING_MAX_WIDTH)) || t.deep ||
		    t.text_prompts || t.vision_prompts)
			__builtin_trap();
		cmr_clip_cfg ac;
		memset(&ac, 0, sizeof ac);
		ac.text.context = 77;
		ac.text.layers = ac.vision.layers = CMR_TUNING_MAX_LEVELS + 1; /* room for any count */
		if (cmr_tuning_check(&t, &ac, err, sizeof err) != 0)
			__builtin_trap();
		return 0;
	}
	if (t.text_prompts < 0 || t.vision_prompts < 0 || t.text_prompts > CMR_TUNING_MAX_PROMPTS ||
	    t.vision_prompts > CMR_TUNING_MAX_PROMPTS || t.text_prompts + t.vision_prompts == 0 ||
	    strcmp(t.method, "prompts") != 0 || memchr(t.init, 0, sizeof t.init) == NULL ||
	    memchr(t.base, 0, sizeof t.base) == NULL)
		__builtin_trap();
	cmr_clip_cfg cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.text.context = 77;
	cfg.text.width = cfg.vision.width = 32;
	cfg.text.layers = cfg.vision.layers = 2;
	if (cmr_tuning_check(&t, &cfg, err, sizeof err) == 0 && t.text_prompts > 75)
		__builtin_trap();
	return 0;
}
