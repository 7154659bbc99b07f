# train.mk - train a CLIP model on image/caption pairs, then evaluate it on held-out images:
# decode the training and held-out archives, tokenize their captions, cmr-train (from a
# config's random init, or from a checkpoint), encode the held-out set with the result and
# print cmr-eval's table (results.txt; also results.json, recall.svg and the training log
# train.jsonl). Intermediate streams are kept in OUT; a second run redoes only what changed.
# The defaults are the from-scratch Flickr8k baseline (examples/flickr8k-scratch.json: 7.6M
# parameters, 64x64 images, 20 epochs, about 10 minutes on 2 cores):
#
#   make -f pipelines/train.mk
#   make -f pipelines/train.mk INIT=clip-vit-base-patch32 SIZE=224 CONTEXT=77 EPOCHS=5 LR=1e-5
#
# Variables:
#   CONFIG     config.json to train from random weights       default: examples/flickr8k-scratch.json
#   INIT       checkpoint directory to start from instead (then CONFIG is not used)
#   TRAIN      training archives                    default: Flickr8k train-0.tar ... train-5.tar
#   TEST       held-out archives                    default: Flickr8k dev.tar
#   CAPTIONS   caption file with both sets' captions             default: Flickr8k captions
#   SIZE       image size (the model's image_size)                default: 64
#   CONTEXT    token context (the model's max_position_embeddings) default: 32
#   FEATURES   a frozen image model (.tflite) whose pooled features are the "images" of a
#              model with a features vision tower (locked-image training, pipelines/lit.mk)
#   EPOCHS, BATCH, LR, SEED, TRAIN_ARGS (more cmr-train options)
#                                             default: 20, 128, 1e-3, 1, --eval-every 92
#   OUT        where the streams, the model and the results go    default: out/train
#   BIN        the cmr tools                                      default: build/bin

SHARED   ?= ../shared/data/flickr8k
CONFIG   ?= examples/flickr8k-scratch.json
INIT     ?=
TRAIN    ?= $(wildcard $(SHARED)/train-*.tar)
TEST     ?= $(SHARED)/dev.tar
CAPTIONS ?= $(SHARED)/captions.token.txt
SIZE     ?= 64
CONTEXT  ?= 32
EPOCHS   ?= 20
BATCH    ?= 128
LR       ?= 1e-3
SEED     ?= 1
FEATURES ?=
TRAIN_ARGS ?= --eval-every 92
OUT      ?= out/train
BIN      ?= build/bin

START := $(if $(INIT),-m $(INIT),--config $(CONFIG))
START_FILES := $(if $(INIT),$(wildcard $(INIT)/config.json $(INIT)/model.safetensors),$(CONFIG))

.PHONY: all show clean
.SECONDARY:
all: $(OUT)/results.txt

show: $(OUT)/results.txt
	@cat $(OUT)/results.txt

$(OUT):
	mkdir -p $@

# each set's image names, for keeping their captions only
$(OUT)/%.list: | $(OUT)
	for a in $(if $(filter train,$*),$(TRAIN),$(TEST)); do tar tf "$$a"; done | sed 's|.*/||' | grep -i '\.jpe\?g$$' >$@.tmp
	mv $@.tmp $@

# the images, decoded at the model's size; with FEATURES, the frozen model's pooled features of
# them (a failed decode fails the rule: the pipe alone would hide its status)
ENCODE_FEATURES := $(if $(FEATURES),| $(BIN)/cmr-encode -q -m $(FEATURES))
$(OUT)/train-images.cmr: $(TRAIN) $(BIN)/cmr-decode $(FEATURES) | $(OUT)
	rm -f $@.failed; { $(BIN)/cmr-decode -q -s $(SIZE) $(TRAIN) || touch $@.failed; } $(ENCODE_FEATURES) >$@.tmp
	test ! -e $@.failed && mv $@.tmp $@

$(OUT)/test-images.cmr: $(TEST) $(BIN)/cmr-decode $(FEATURES) | $(OUT)
	rm -f $@.failed; { $(BIN)/cmr-decode -q -s $(SIZE) $(TEST) || touch $@.failed; } $(ENCODE_FEATURES) >$@.tmp
	test ! -e $@.failed && mv $@.tmp $@

$(OUT)/%-texts.cmr: $(CAPTIONS) $(OUT)/%.list $(BIN)/cmr-caption-ingest
	$(BIN)/cmr-caption-ingest -q -c $(CONTEXT) --only $(OUT)/$*.list -o $@ $(CAPTIONS)

$(OUT)/model/model.safetensors: $(OUT)/train-images.cmr $(OUT)/train-texts.cmr $(OUT)/test-images.cmr \
		$(OUT)/test-texts.cmr $(START_FILES) $(BIN)/cmr-train
	$(BIN)/cmr-train $(START) -o $(OUT)/model -b $(BATCH) --epochs $(EPOCHS) --lr $(LR) --seed $(SEED) \
		--eval $(OUT)/test-images.cmr --eval $(OUT)/test-texts.cmr --log $(OUT)/train.jsonl $(TRAIN_ARGS) \
		$(OUT)/train-images.cmr $(OUT)/train-texts.cmr

$(OUT)/%-emb.cmr: $(OUT)/test-%.cmr $(OUT)/model/model.safetensors $(BIN)/cmr-encode
	$(BIN)/cmr-encode -q -m $(OUT)/model -o $@ $<

$(OUT)/results.txt: $(OUT)/images-emb.cmr $(OUT)/texts-emb.cmr $(BIN)/cmr-eval
	$(BIN)/cmr-eval --json $(OUT)/images-emb.cmr $(OUT)/texts-emb.cmr >$(OUT)/results.json.tmp
	mv $(OUT)/results.json.tmp $(OUT)/results.json
	$(BIN)/cmr-eval --plot $(OUT)/recall.svg $(OUT)/images-emb.cmr $(OUT)/texts-emb.cmr >$@.tmp
	mv $@.tmp $@
	@cat $@

clean:
	rm -rf $(OUT)
