# transfer.mk - the "specific database" benchmark: pretrain a base CLIP once on a source world,
# then adapt it to target databases it has not seen with each method, with the same budget of
# target pairs and several seeds, and tabulate the results (results.md, results.json).
# Worlds are JSON files (examples/worlds/README.md); mkworld renders them. One make target a
# row, so `make -j` runs rows side by side and a second `make` redoes only what changed.
#
#   make -f pipelines/transfer.mk                 # everything: data, base, every row, table
#   make -f pipelines/transfer.mk base            # the base model and its source test figures
#   make -f pipelines/transfer.mk TARGETS=vocab METHODS="zeroshot proj" SEEDS=1
#   make -f pipelines/transfer.mk publish         # the table into bench/RESULTS.md
#
# Variables:
#   WORLDS       where the world files are                default: examples/worlds
#   SOURCE       the source world                         default: source
#   TARGETS      target databases                         default: render vocab compose personal
#   METHODS      zeroshot full proj last tprompt vprompt prompts deep pool pool-nopull
#                pool-desc vprompt-desc adapter-par adapter-seq adapter-par-ms adapter-seq-ms
#                adapter-seq-auto lora lora-ms; and the head's modules (not run by default:
#                HEAD_METHODS below) head-levels head-inject head-both head-both-hi lora-head lora-ms-levels
#                lora-ms-inject lora-ms-head adapter-par-ms-head adapter-seq-ms-head; and soft
#                contrastive transfer (SOFT_METHODS below) class soft-labels soft-relaxed
#                soft-selective soft-kl soft-mse soft prompts-soft
#                (and what later methods register below)
#   SEEDS        seeds of the tuning runs                  default: 1 2 3
#   BASE_CONFIG  the base model's config.json              default: examples/transfer-base.json
#   BASE_EPOCHS, BASE_LR, BATCH                            default: 22, 2e-3, 128
#   TUNE_EPOCHS, TUNE_LR (every method, the same budget)   default: 10, 5e-4
#   TUNE_EPOCHS_<target>  a target's own budget (personal: 40, its 300 pairs)
#   PROMPT_LR, PROMPT_INIT, TEXT_PROMPTS, VISION_PROMPTS
#                the prompt methods' learning rate, text prompts' phrase, lengths
#                                                             default: 1e-2, "there is", 2, 8
#   POOL_SIZE, POOL_LENGTH, POOL_TOPK  the prompt pool's (methods pool, pool-nopull: keys by
#                k-means of the target's training images, cmr-promptpool init, then
#                cmr-train --pool with and without the keys' pull term)   default: 10, 2, 4
#   ADAPTER_LR, ADAPTER_WIDTH, ADAPTER_WIDTH_MS  the adapters' learning rate and widths, equal
#                and modality-specific                    default: 1e-3, 16, vision=24,text=8
#   LEVELS, INJECT, INJECT_WIDTH  the head's modules: multi-level attention over LEVELS layers,
#                injection from INJECT earlier ones          default: 3, 2, 32
#   SECTION, SVG  where publish writes: bench/RESULTS.md's section, the plot
#                                                             default: transfer, bench/transfer.svg
#   SIZE, CONTEXT  (the config's image size and context)   default: 64, 64
#   OUT          streams, models, rows and the table       default: out/transfer
#   BIN, MKWORLD the tools                                 default: build/bin, build/examples/mkworld

WORLDS      ?= examples/worlds
SOURCE      ?= source
TARGETS     ?= render vocab compose personal
METHODS     ?= zeroshot full proj last tprompt vprompt prompts deep pool pool-nopull pool-desc vprompt-desc \
	       adapter-par adapter-seq adapter-par-ms adapter-seq-ms adapter-seq-auto lora lora-ms
SEEDS       ?= 1 2 3
BASE_CONFIG ?= examples/transfer-base.json
BASE_EPOCHS ?= 22
BASE_LR     ?= 2e-3
BATCH       ?= 128
TUNE_EPOCHS ?= 10
TUNE_LR     ?= 5e-4
TUNE_EPOCHS_personal ?= 40
SIZE        ?= 64
CONTEXT     ?= 64
OUT         ?= out/transfer
BIN         ?= build/bin
MKWORLD     ?= build/examples/mkworld

# what each method trains (cmr-train options); a new method adds its line
METHOD_ARGS_zeroshot :=
METHOD_ARGS_full     :=
METHOD_ARGS_proj     := --train visual_projection.weight --train text_projection.weight
METHOD_ARGS_last     := --train *.layers.2.* --train *post_layernorm* --train *final_layer_norm* \
			--train visual_projection.weight --train text_projection.weight
# prompt tuning on the frozen base (cmr-tuning(5)), at a larger learning rate: text prompts
# start from the words the source's captions open with (CoOp's "a photo of a"; random text
# prompts start far from the base's function), vision prompts N(0, 0.02) (VPT)
PROMPT_LR            ?= 1e-2
PROMPT_INIT          ?= there is
TEXT_PROMPTS         ?= 2
VISION_PROMPTS       ?= 8
METHOD_ARGS_tprompt  := --text-prompts $(TEXT_PROMPTS) --lr $(PROMPT_LR)
METHOD_ARGS_vprompt  := --vision-prompts $(VISION_PROMPTS) --lr $(PROMPT_LR)
METHOD_ARGS_prompts  := --text-prompts $(TEXT_PROMPTS) --vision-prompts $(VISION_PROMPTS) --lr $(PROMPT_LR)
METHOD_ARGS_deep     := --text-prompts $(TEXT_PROMPTS) --vision-prompts $(VISION_PROMPTS) --deep --lr $(PROMPT_LR)
# the prompt pool (issue 17): a pool made per row from the target's training images (a
# method's METHOD_PREP runs in the row's recipe, with T, S and D, the row's directory, set),
# K x L = 8 rows per image as the vision prompts; pool-nopull: the keys stay where k-means put
# them (the authors' code: no loss reaches the keys)
POOL_SIZE            ?= 10
POOL_LENGTH          ?= 2
POOL_TOPK            ?= 4
METHOD_PREP_pool     = mkdir -p $$D && $(BIN)/cmr-promptpool init -q -m $(OUT)/base -o $$D/pool-init \
			--size $(POOL_SIZE) --length $(POOL_LENGTH) --top-k $(POOL_TOPK) --seed $$S \
			$(OUT)/data/$$T-train-i.cmr &&
METHOD_PREP_pool-nopull = $(METHOD_PREP_pool)
METHOD_ARGS_pool     = --pool $$D/pool-init --lr $(PROMPT_LR)
METHOD_ARGS_pool-nopull = --pool $$D/pool-init --pull 0 --lr $(PROMPT_LR)
# descriptions (APSE-IPIK's implicit knowledge): the world's three descriptions of each training
# image (mkworld's KEY.desc: the whole, the background, the entities) aligned with the images
# by cmr-train --desc's terms at the authors' weights, on the pool and on fixed vision prompts
METHOD_PREP_pool-desc = $(METHOD_PREP_pool)
METHOD_ARGS_pool-desc = $(METHOD_ARGS_pool) --desc $(OUT)/data/$$T-train-d.cmr
METHOD_ARGS_vprompt-desc = $(METHOD_ARGS_vprompt) --desc $(OUT)/data/$$T-train-d.cmr
# adapters (issue 18) in every layer of both towers of the frozen base: parallel (AdaptFormer),
# sequential (Houlsby) and LoRA on the attention's projections, each with equal widths and with modality-specific ones at the same
# budget (the towers are as wide: 24 + 8 = 16 + 16)
ADAPTER_LR           ?= 1e-3
ADAPTER_WIDTH        ?= 16
ADAPTER_WIDTH_MS     ?= vision=24,text=8
METHOD_ARGS_adapter-par    = --adapter parallel --adapter-width $(ADAPTER_WIDTH) --lr $(ADAPTER_LR)
METHOD_ARGS_adapter-seq    = --adapter sequential --adapter-width $(ADAPTER_WIDTH) --lr $(ADAPTER_LR)
METHOD_ARGS_adapter-par-ms = --adapter parallel --adapter-width $(ADAPTER_WIDTH_MS) --lr $(ADAPTER_LR)
METHOD_ARGS_adapter-seq-ms = --adapter sequential --adapter-width $(ADAPTER_WIDTH_MS) --lr $(ADAPTER_LR)
METHOD_ARGS_lora     = --adapter lora --adapter-width $(ADAPTER_WIDTH) --lr $(ADAPTER_LR)
METHOD_ARGS_lora-ms  = --adapter lora --adapter-width $(ADAPTER_WIDTH_MS) --lr $(ADAPTER_LR)
# the widths from the effective ranks of the base's features on the target (--adapter-capacity auto)
METHOD_ARGS_adapter-seq-auto = --adapter sequential --adapter-width $(ADAPTER_WIDTH) --adapter-capacity auto \
			--lr $(ADAPTER_LR)
# the head's modules (issue 18: MASAN's multi-level attention and cross-level injection, gates
# from zero) alone on the frozen base, and beside LoRA and the adapters at the
# modality-specific widths; the base has 3 layers a tower: levels 0, 1, 2, injection from 0, 1
LEVELS               ?= 3
INJECT               ?= 2
INJECT_WIDTH         ?= 32
HEAD_LEVELS          = --multi-level $(LEVELS)
HEAD_INJECT          = --inject $(INJECT) --inject-width $(INJECT_WIDTH)
METHOD_ARGS_head-levels = $(HEAD_LEVELS) --lr $(ADAPTER_LR)
METHOD_ARGS_head-inject = $(HEAD_INJECT) --lr $(ADAPTER_LR)
METHOD_ARGS_head-both = $(HEAD_LEVELS) $(HEAD_INJECT) --lr $(ADAPTER_LR)
# the same at the prompts' learning rate: the gates start at zero and grow by about the
# learning rate a step (Adam), so at 1e-3 they end near 0.01-0.07 after 150 steps
METHOD_ARGS_head-both-hi = $(HEAD_LEVELS) $(HEAD_INJECT) --lr $(PROMPT_LR)
METHOD_ARGS_lora-head = $(METHOD_ARGS_lora) $(HEAD_LEVELS) $(HEAD_INJECT)
METHOD_ARGS_lora-ms-levels = $(METHOD_ARGS_lora-ms) $(HEAD_LEVELS)
METHOD_ARGS_lora-ms-inject = $(METHOD_ARGS_lora-ms) $(HEAD_INJECT)
METHOD_ARGS_lora-ms-head = $(METHOD_ARGS_lora-ms) $(HEAD_LEVELS) $(HEAD_INJECT)
METHOD_ARGS_adapter-par-ms-head = $(METHOD_ARGS_adapter-par-ms) $(HEAD_LEVELS) $(HEAD_INJECT)
METHOD_ARGS_adapter-seq-ms-head = $(METHOD_ARGS_adapter-seq-ms) $(HEAD_LEVELS) $(HEAD_INJECT)
# the run that measures them beside their peers (bench/RESULTS.md's "transfer-heads"):
#   make -f pipelines/transfer.mk METHODS='$(HEAD_METHODS)' SECTION=transfer-heads \
#        SVG=bench/transfer-heads.svg table publish
HEAD_METHODS         = zeroshot head-levels head-inject head-both head-both-hi lora lora-head lora-ms lora-ms-levels \
		       lora-ms-inject lora-ms-head adapter-par-ms adapter-par-ms-head adapter-seq-ms adapter-seq-ms-head
# soft contrastive transfer (issue 19): a class-wise source per target and seed (full tuning of
# the base on the target's training pairs with --labels from the worlds' KEY.cls and no
# pair-wise term, OUT/teachers/T-sS), whose embeddings of the training streams teach the
# target model trained pair-wise: each term alone, and the combined default, with full tuning
# and with prompts; "class" is the class-wise source alone (the teacher itself)
TEACHER_OF           = --teacher-images $(OUT)/teachers/$$T-s$$S/i.emb --teacher-texts $(OUT)/teachers/$$T-s$$S/t.emb
SOFT_DEFAULT         ?= --soft-labels 1 --soft-alpha 0.5 --relaxed-margin 1
METHOD_ARGS_class    = --labels $(OUT)/data/$$T-train-labels.tsv --base-weight 0
METHOD_ARGS_soft-labels = $(TEACHER_OF) --soft-labels 1
METHOD_ARGS_soft-relaxed = $(TEACHER_OF) --relaxed-margin 1
METHOD_ARGS_soft-selective = $(TEACHER_OF) --selective 1
METHOD_ARGS_soft-kl  = $(TEACHER_OF) --distill-kl 1
METHOD_ARGS_soft-mse = $(TEACHER_OF) --distill-mse 1
METHOD_ARGS_soft     = $(TEACHER_OF) $(SOFT_DEFAULT)
METHOD_ARGS_prompts-soft = $(METHOD_ARGS_prompts) $(TEACHER_OF) $(SOFT_DEFAULT)
METHOD_INIT_prompts-soft := $(PROMPT_INIT)
TEACHER_METHODS      = soft-labels soft-relaxed soft-selective soft-kl soft-mse soft prompts-soft
SOFT_METHODS         = zeroshot full prompts class $(TEACHER_METHODS)
SECTION              ?= transfer
SVG                  ?= bench/transfer.svg
METHOD_INIT_tprompt  := $(PROMPT_INIT)
METHOD_INIT_prompts  := $(PROMPT_INIT)
METHOD_INIT_deep     := $(PROMPT_INIT)

export BIN SOURCE BATCH TUNE_EPOCHS TUNE_LR METHODS

.PHONY: all base data table publish clean
.SECONDARY:
all: $(OUT)/results.md

WORLD_NAMES := $(SOURCE) $(TARGETS)
data: $(foreach w,$(WORLD_NAMES),$(foreach s,train test,$(OUT)/data/$(w)-$(s)-i.cmr $(OUT)/data/$(w)-$(s)-t.cmr))

$(OUT)/data/%-train.tar: $(WORLDS)/%.json | $(MKWORLD)
	@mkdir -p $(@D)
	$(MKWORLD) $< >$@.tmp && mv $@.tmp $@

$(OUT)/data/%-test.tar: $(WORLDS)/%.json | $(MKWORLD)
	@mkdir -p $(@D)
	$(MKWORLD) --split test $< >$@.tmp && mv $@.tmp $@

$(OUT)/data/%-i.cmr: $(OUT)/data/%.tar | $(BIN)/cmr-decode
	$(BIN)/cmr-decode -q -s $(SIZE) -o $@ $<

$(OUT)/data/%-t.cmr: $(OUT)/data/%.tar | $(BIN)/cmr-caption-ingest
	$(BIN)/cmr-caption-ingest -q -f wds -c $(CONTEXT) -o $@ $<

$(OUT)/data/%-d.cmr: $(OUT)/data/%.tar | $(BIN)/cmr-caption-ingest
	$(BIN)/cmr-caption-ingest -q -f wds --desc -c $(CONTEXT) -o $@ $<

# The tools are order-only prerequisites: a rebuild of cmr (every commit relinks them) does not
# redo the data, the base model or the rows; `make clean` (or removing a row) does.

# the base model: pretrained once on the source world, checked on its test set
base: $(OUT)/base-source.json
# trained into base.tmp and renamed when cmr-train succeeds: an interrupted run (which saves
# its last step, by design) is never taken for the finished base model
$(OUT)/base/model.safetensors: $(BASE_CONFIG) $(OUT)/data/$(SOURCE)-train-i.cmr $(OUT)/data/$(SOURCE)-train-t.cmr \
		$(OUT)/data/$(SOURCE)-test-i.cmr $(OUT)/data/$(SOURCE)-test-t.cmr | $(BIN)/cmr-train
	rm -rf $(OUT)/base.tmp
	$(BIN)/cmr-train --config $(BASE_CONFIG) -o $(OUT)/base.tmp -b $(BATCH) --epochs $(BASE_EPOCHS) --lr $(BASE_LR) \
		--log $(OUT)/base.jsonl --eval $(OUT)/data/$(SOURCE)-test-i.cmr --eval $(OUT)/data/$(SOURCE)-test-t.cmr \
		$(OUT)/data/$(SOURCE)-train-i.cmr $(OUT)/data/$(SOURCE)-train-t.cmr
	rm -rf $(OUT)/base && mv $(OUT)/base.tmp $(OUT)/base

$(OUT)/base-source.json: $(OUT)/base/model.safetensors
	$(BIN)/cmr-encode -q -m $(OUT)/base -o $(OUT)/base-i.emb $(OUT)/data/$(SOURCE)-test-i.cmr
	$(BIN)/cmr-encode -q -m $(OUT)/base -o $(OUT)/base-t.emb $(OUT)/data/$(SOURCE)-test-t.cmr
	$(BIN)/cmr-eval --json $(OUT)/base-i.emb $(OUT)/base-t.emb >$@.tmp && mv $@.tmp $@
	rm -f $(OUT)/base-i.emb $(OUT)/base-t.emb

# a target's classes: KEY<TAB>CLASS from the world's KEY.cls members
$(OUT)/data/%-train-labels.tsv: $(OUT)/data/%-train.tar
	rm -rf $@.d && mkdir -p $@.d && tar -xf $< -C $@.d --wildcards '*.cls'
	for f in $@.d/*.cls; do printf '%s\t%s\n' "$$(basename "$$f" .cls)" "$$(cat "$$f")"; done >$@.tmp
	mv $@.tmp $@ && rm -rf $@.d

# the class-wise source of target T and seed S, and its embeddings of T's training streams
define teacher
$(OUT)/teachers/$(1)-s$(2)/t.emb: $(OUT)/base-source.json $(OUT)/data/$(1)-train-i.cmr $(OUT)/data/$(1)-train-t.cmr \
		$(OUT)/data/$(1)-train-labels.tsv
	rm -rf $(OUT)/teachers/$(1)-s$(2) && mkdir -p $(OUT)/teachers/$(1)-s$(2)
	$(BIN)/cmr-train -q -m $(OUT)/base -o $(OUT)/teachers/$(1)-s$(2)/model -b $(BATCH) \
		--epochs $$(or $$(TUNE_EPOCHS_$(1)),$$(TUNE_EPOCHS)) --lr $(TUNE_LR) --seed $(2) \
		--labels $(OUT)/data/$(1)-train-labels.tsv --base-weight 0 $(OUT)/data/$(1)-train-i.cmr $(OUT)/data/$(1)-train-t.cmr
	$(BIN)/cmr-encode -q -m $(OUT)/teachers/$(1)-s$(2)/model -o $(OUT)/teachers/$(1)-s$(2)/i.emb $(OUT)/data/$(1)-train-i.cmr
	$(BIN)/cmr-encode -q -m $(OUT)/teachers/$(1)-s$(2)/model -o $(OUT)/teachers/$(1)-s$(2)/t.emb.tmp $(OUT)/data/$(1)-train-t.cmr
	mv $(OUT)/teachers/$(1)-s$(2)/t.emb.tmp $$@
endef
$(foreach t,$(TARGETS),$(foreach s,$(SEEDS),$(eval $(call teacher,$(t),$(s)))))

# one row: target T, method M, seed S (zeroshot has one seed: it trains nothing)
define row
$(OUT)/runs/$(1)/$(2)-s$(3)/row.txt: $(OUT)/base-source.json $(OUT)/data/$(1)-train-i.cmr $(OUT)/data/$(1)-train-t.cmr \
		$(OUT)/data/$(1)-test-i.cmr $(OUT)/data/$(1)-test-t.cmr pipelines/transfer-run.sh \
		$(if $(filter $(2),$(TEACHER_METHODS)),$(OUT)/teachers/$(1)-s$(3)/t.emb) \
		$(if $(filter class,$(2)),$(OUT)/data/$(1)-train-labels.tsv) \
		| $(OUT)/data/$(1)-train-d.cmr
	T=$(1) S=$(3) D=$(OUT)/runs/$(1)/$(2)-s$(3); $$(METHOD_PREP_$(2)) \
	METHOD_ARGS="$$(METHOD_ARGS_$(2))" METHOD_INIT="$$(METHOD_INIT_$(2))" TUNE_EPOCHS=$$(or $$(TUNE_EPOCHS_$(1)),$$(TUNE_EPOCHS)) \
		sh pipelines/transfer-run.sh $(OUT) $(1) $(2) $(3)
ROWS += $(OUT)/runs/$(1)/$(2)-s$(3)/row.txt
endef
$(foreach t,$(TARGETS),$(foreach m,$(METHODS),$(foreach s,$(if $(filter zeroshot,$(m)),1,$(SEEDS)),\
	$(eval $(call row,$(t),$(m),$(s))))))

table: $(OUT)/results.md
$(OUT)/results.md: $(ROWS) pipelines/transfer-table.sh pipelines/transfer-plot.sh
	sh pipelines/transfer-table.sh $(OUT)
	sh pipelines/transfer-plot.sh $(OUT)

# the table into bench/RESULTS.md (section "transfer", with machine, date and command), the
# plot into bench/transfer.svg
publish: $(OUT)/results.md
	sh pipelines/transfer-publish.sh $(OUT) 'make -f pipelines/transfer.mk $(MAKEFLAGS)' $(BASE_CONFIG) $(SECTION) $(SVG)

clean:
	rm -rf $(OUT)
