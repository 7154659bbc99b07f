# zeroshot.mk - zero-shot retrieval with a CLIP checkpoint: decode the images, tokenize their
# captions, encode both, evaluate both directions and print the table (results.txt; also
# results.json and recall.svg). Intermediate streams are kept in OUT, and a second run redoes
# only what changed (inputs, model files or the tools themselves): nothing, if nothing did.
# "make -f pipelines/zeroshot.mk show MODEL=..." prints the table again.
#
#   make -f pipelines/zeroshot.mk MODEL=clip-vit-base-patch32 \
#        IMAGES=../shared/data/flickr8k/dev.tar CAPTIONS=../shared/data/flickr8k/captions.token.txt
#
# Variables:
#   MODEL     Hugging Face CLIP checkpoint directory (config.json, model.safetensors)   required
#   IMAGES    archives or directories of JPEGs                        default: Flickr8k dev
#   CAPTIONS  caption file (any cmr-caption-ingest format)            default: Flickr8k captions
#   ONLY      the images' list, so that only their captions are kept  default: derived from IMAGES
#   OUT       where the streams and results go                        default: out/zeroshot
#   BIN       the cmr tools                                           default: build/bin
#   BATCH     cmr-encode batch size                                   default: 32

MODEL    ?=
IMAGES   ?= ../shared/data/flickr8k/dev.tar
CAPTIONS ?= ../shared/data/flickr8k/captions.token.txt
OUT      ?= out/zeroshot
BIN      ?= build/bin
BATCH    ?= 32
ifeq ($(MODEL),)
$(error MODEL=DIR is required: a Hugging Face CLIP checkpoint directory)
endif
ifeq ($(wildcard $(MODEL)/config.json),)
$(error MODEL=$(MODEL) has no config.json: give a Hugging Face CLIP checkpoint directory)
endif

MODEL_FILES := $(wildcard $(MODEL)/config.json $(MODEL)/model.safetensors $(MODEL)/preprocessor_config.json)

.PHONY: all show clean
all: $(OUT)/results.txt

show: $(OUT)/results.txt
	@cat $(OUT)/results.txt

$(OUT):
	mkdir -p $@

# the decoded images' keys (any archive format, any directory), for keeping their captions only
$(OUT)/images.list: $(OUT)/images.cmr $(BIN)/cmr-dump
	$(BIN)/cmr-dump list -H $(OUT)/images.cmr | awk '$$4 == "image" { print $$NF }' >$@.tmp && mv $@.tmp $@

# the image size and the context length come from the model (-m)
$(OUT)/images.cmr: $(IMAGES) $(MODEL_FILES) $(BIN)/cmr-decode | $(OUT)
	$(BIN)/cmr-decode -m $(MODEL) -o $@ $(IMAGES)

$(OUT)/captions.cmr: $(CAPTIONS) $(OUT)/images.list $(MODEL_FILES) $(BIN)/cmr-caption-ingest | $(OUT)
	$(BIN)/cmr-caption-ingest -m $(MODEL) --only $(OUT)/images.list -o $@ $(CAPTIONS)

$(OUT)/image-emb.cmr: $(OUT)/images.cmr $(MODEL_FILES) $(BIN)/cmr-encode
	$(BIN)/cmr-encode -m $(MODEL) -b $(BATCH) -o $@ $(OUT)/images.cmr

$(OUT)/text-emb.cmr: $(OUT)/captions.cmr $(MODEL_FILES) $(BIN)/cmr-encode
	$(BIN)/cmr-encode -m $(MODEL) -b $(BATCH) -o $@ $(OUT)/captions.cmr

$(OUT)/results.txt: $(OUT)/image-emb.cmr $(OUT)/text-emb.cmr $(BIN)/cmr-eval
	$(BIN)/cmr-eval --json $(OUT)/image-emb.cmr $(OUT)/text-emb.cmr >$(OUT)/results.json.tmp
	mv $(OUT)/results.json.tmp $(OUT)/results.json
	$(BIN)/cmr-eval --plot $(OUT)/recall.svg $(OUT)/image-emb.cmr $(OUT)/text-emb.cmr >$@.tmp
	mv $@.tmp $@
	@cat $@

clean:
	rm -rf $(OUT)
