# mask.mk - unpaired image-text matching (MACK/MASK, issue 21) on Flickr8k dev with no
# Flickr8k pair used: concept knowledge from an unlabelled image pool (the train images, their
# captions never read) through a pretrained MobileNet's pooled features and confident classes,
# captions' words turned into visual prototypes (with and without out-of-vocabulary bridging
# through GloVe neighbours), the learned mapping of visual features into the word space, and
# late-interaction scoring of the dev images' regions. With a paired model (LIT, the
# locked-image model of pipelines/lit.mk), its dev ranking alone and re-ranked by the
# unpaired score (fusion). Writes $(OUT)/results.md (the table) and each row's cmr-eval JSON.
#
#   make -f pipelines/mask.mk                   # ~20 minutes on 2 cores, most of it encoding the pool
#   make -f pipelines/mask.mk LIT=out/lit       # and the fusion rows (run pipelines/lit.mk first)
#
# Variables:
#   POOL       unlabelled image archives (captions unused)   default: Flickr8k train-0..5.tar
#   TEST       evaluated archives                            default: Flickr8k dev.tar
#   CAPTIONS   the caption file (only TEST's captions read)  default: Flickr8k captions
#   MODEL      the TFLite classifier (features, regions, classes) default: MobileNet v2 uint8
#   SIZE       the model's image size                     default: 224
#   LABELS     its class names                               default: imagenet_labels.txt
#   WORDVEC    word vectors                                  default: the GloVe 50-d subset
#   STOPWORDS  words never concepts nor caption rows         default: examples/stopwords-en.txt
#   MIN_PROB, MIN_COUNT    build's confidence and size floors      default: 0.5, 3
#   OOD_M, OOD_TAU, OOD_MIN_COS   the OOD bridge                  default: 10, 0.1, 0.7
#   MAP_ARGS   cmr-knowledge map's options                   default: --steps 500
#   LIT        a pipelines/train.mk output folder (model, images-emb.cmr, texts-emb.cmr) to fuse with
#   BETAS      the fusion weights measured                    default: 0.05 0.1 0.2 0.5
#   FUSE_TOP   candidates re-ranked per query                default: 20
#   OUT, BIN                                                 default: out/mask, build/bin

SHARED     ?= ../shared/data/flickr8k
PRETRAINED ?= ../shared/pretrained
POOL       ?= $(wildcard $(SHARED)/train-*.tar)
TEST       ?= $(SHARED)/dev.tar
CAPTIONS   ?= $(SHARED)/captions.token.txt
MODEL      ?= $(PRETRAINED)/mobilenet-tflite/mobilenet_v2_1.0_224_quant.tflite
LABELS     ?= $(PRETRAINED)/mobilenet-tflite/imagenet_labels.txt
WORDVEC    ?= $(PRETRAINED)/glove-50d-subset/embeddings.json
STOPWORDS  ?= examples/stopwords-en.txt
SIZE       ?= 224
MIN_PROB   ?= 0.5
MIN_COUNT  ?= 3
OOD_M      ?= 10
OOD_TAU    ?= 0.1
OOD_MIN_COS ?= 0.7
MAP_ARGS   ?= --steps 500
LIT        ?=
BETAS      ?= 0.05 0.1 0.2 0.5
FUSE_TOP   ?= 20
OUT        ?= out/mask
BIN        ?= build/bin

OOD := --word-vectors $(WORDVEC) --ood-neighbours $(OOD_M) --ood-tau $(OOD_TAU) --ood-min-cos $(OOD_MIN_COS)
ROWS := proto proto-ood mapped mapped-global mapped-global-proto-ood
FUSED := $(if $(LIT),lit $(BETAS:%=fused-%))

.PHONY: all clean
.SECONDARY:
all: $(OUT)/results.md

$(OUT):
	mkdir -p $@

# the pool's pooled features and class probabilities, a shard at a time (a failed decode
# fails the rule: the pipe alone would hide its status)
# (the tools are order-only here: rebuilding them does not redo the pool; make clean does)
$(OUT)/pool-%-pooled.cmr $(OUT)/pool-%-classes.cmr: $(SHARED)/%.tar $(MODEL) | $(BIN)/cmr-decode $(BIN)/cmr-encode $(OUT)
	$(BIN)/cmr-decode -q -s $(SIZE) -o $(OUT)/pool-$*.tmp $<
	$(BIN)/cmr-encode -q -m $(MODEL) -F pooled -o $(OUT)/pool-$*-pooled.cmr $(OUT)/pool-$*.tmp
	$(BIN)/cmr-encode -q -m $(MODEL) -F classes -o $(OUT)/pool-$*-classes.cmr $(OUT)/pool-$*.tmp
	rm -f $(OUT)/pool-$*.tmp

POOL_NAMES := $(notdir $(POOL:.tar=))
$(OUT)/knowledge.st: $(POOL_NAMES:%=$(OUT)/pool-%-pooled.cmr) $(LABELS) $(WORDVEC) $(STOPWORDS) $(BIN)/cmr-knowledge
	$(BIN)/cmr-knowledge build -v -o $@ $(POOL_NAMES:%=-c $(OUT)/pool-%-classes.cmr) --labels $(LABELS) \
		--word-vectors $(WORDVEC) --stopwords $(STOPWORDS) --min-prob $(MIN_PROB) --min-count $(MIN_COUNT) \
		$(POOL_NAMES:%=$(OUT)/pool-%-pooled.cmr)
	$(BIN)/cmr-knowledge info --words $@ >$(OUT)/concepts.txt

$(OUT)/knowledge-mapped.st: $(OUT)/knowledge.st
	$(BIN)/cmr-knowledge map -v $(MAP_ARGS) -o $@ $<

# the evaluated images' regions (7x7 positions), put in the prototypes' space and the word space
$(OUT)/test.list: $(TEST) | $(OUT)
	tar tf $(TEST) | sed 's|.*/||' | grep -iE '\.(jpe?g|png|webp)$$' >$@.tmp
	mv $@.tmp $@

$(OUT)/test-regions.cmr: $(TEST) $(MODEL) | $(BIN)/cmr-decode $(BIN)/cmr-encode $(OUT)
	$(BIN)/cmr-decode -q -s $(SIZE) -o $@.img $(TEST)
	$(BIN)/cmr-encode -q -m $(MODEL) -F regions --dtype f16 -o $@ $@.img
	rm -f $@.img

$(OUT)/regions-proto.cmr: $(OUT)/knowledge.st $(OUT)/test-regions.cmr
	$(BIN)/cmr-knowledge apply -o $@ $^

$(OUT)/regions-mapped.cmr: $(OUT)/knowledge-mapped.st $(OUT)/test-regions.cmr
	$(BIN)/cmr-knowledge apply --mapped -o $@ $^

# the captions' words: prototypes (concepts only, or bridged too), or word vectors (any word)
$(OUT)/words-proto.cmr: $(CAPTIONS) $(OUT)/test.list $(OUT)/knowledge.st $(STOPWORDS)
	$(BIN)/cmr-caption-ingest -v -f flickr --only $(OUT)/test.list --knowledge $(OUT)/knowledge.st \
		--stopwords $(STOPWORDS) -o $@ $(CAPTIONS) 2>$@.log
	cat $@.log

$(OUT)/words-proto-ood.cmr: $(CAPTIONS) $(OUT)/test.list $(OUT)/knowledge.st $(STOPWORDS) $(WORDVEC)
	$(BIN)/cmr-caption-ingest -v -f flickr --only $(OUT)/test.list --knowledge $(OUT)/knowledge.st $(OOD) \
		--stopwords $(STOPWORDS) -o $@ $(CAPTIONS) 2>$@.log
	cat $@.log

$(OUT)/words-vec.cmr: $(CAPTIONS) $(OUT)/test.list $(WORDVEC) $(STOPWORDS)
	$(BIN)/cmr-caption-ingest -v -f flickr --only $(OUT)/test.list --word-vectors $(WORDVEC) \
		--stopwords $(STOPWORDS) -o $@ $(CAPTIONS) 2>$@.log
	cat $@.log

# one cmr-eval per row: late interaction (max over regions, mean over words)
$(OUT)/proto.json: $(OUT)/regions-proto.cmr $(OUT)/words-proto.cmr
	$(BIN)/cmr-eval --json --score maxsim-mean $^ >$@.tmp && mv $@.tmp $@
$(OUT)/proto-ood.json: $(OUT)/regions-proto.cmr $(OUT)/words-proto-ood.cmr
	$(BIN)/cmr-eval --json --score maxsim-mean $^ >$@.tmp && mv $@.tmp $@
$(OUT)/mapped.json: $(OUT)/regions-mapped.cmr $(OUT)/words-vec.cmr
	$(BIN)/cmr-eval --json --score maxsim-mean $^ >$@.tmp && mv $@.tmp $@

# the mapping on whole images: the mapped pooled feature against the caption's mean word
# vector (cosine), alone and re-ranked over all candidates by the prototypes' late
# interaction with equal weight (beta 1: the two unpaired scores' sum)
$(OUT)/test-pooled.cmr: $(TEST) $(MODEL) | $(BIN)/cmr-decode $(BIN)/cmr-encode $(OUT)
	$(BIN)/cmr-decode -q -s $(SIZE) -o $@.img $(TEST)
	$(BIN)/cmr-encode -q -m $(MODEL) -F pooled -o $@ $@.img
	rm -f $@.img

$(OUT)/pooled-mapped.cmr: $(OUT)/knowledge-mapped.st $(OUT)/test-pooled.cmr
	$(BIN)/cmr-knowledge apply --mapped -o $@ $^

$(OUT)/words-mean.cmr: $(CAPTIONS) $(OUT)/test.list $(WORDVEC) $(STOPWORDS)
	$(BIN)/cmr-caption-ingest -q -f flickr --only $(OUT)/test.list --word-vectors $(WORDVEC) --mean \
		--stopwords $(STOPWORDS) -o $@ $(CAPTIONS)

$(OUT)/mapped-global.json: $(OUT)/pooled-mapped.cmr $(OUT)/words-mean.cmr
	$(BIN)/cmr-eval --json $^ >$@.tmp && mv $@.tmp $@
$(OUT)/mapped-global-proto-ood.json: $(OUT)/pooled-mapped.cmr $(OUT)/words-mean.cmr $(OUT)/regions-proto.cmr \
		$(OUT)/words-proto-ood.cmr $(OUT)/test.list
	$(BIN)/cmr-eval --json --fuse-images $(OUT)/regions-proto.cmr --fuse-texts $(OUT)/words-proto-ood.cmr \
		--fuse-beta 1 --fuse-top $$(wc -l <$(OUT)/test.list) $(OUT)/pooled-mapped.cmr $(OUT)/words-mean.cmr >$@.tmp
	mv $@.tmp $@

# the paired model alone, and re-ranked by the unpaired score (prototypes with the OOD bridge)
$(OUT)/lit.json: $(LIT)/images-emb.cmr $(LIT)/texts-emb.cmr
	$(BIN)/cmr-eval --json $^ >$@.tmp && mv $@.tmp $@
$(OUT)/fused-%.json: $(LIT)/images-emb.cmr $(LIT)/texts-emb.cmr $(OUT)/regions-proto.cmr $(OUT)/words-proto-ood.cmr
	$(BIN)/cmr-eval --json --fuse-images $(OUT)/regions-proto.cmr --fuse-texts $(OUT)/words-proto-ood.cmr \
		--fuse-beta $* --fuse-top $(FUSE_TOP) $(LIT)/images-emb.cmr $(LIT)/texts-emb.cmr >$@.tmp && mv $@.tmp $@

$(OUT)/results.md: $(ROWS:%=$(OUT)/%.json) $(FUSED:%=$(OUT)/%.json) pipelines/mask-table.sh
	FUSE_TOP=$(FUSE_TOP) MAKE_VARS="$(strip $(MAKEOVERRIDES))" sh pipelines/mask-table.sh $(OUT) "$(ROWS)" "$(FUSED)" >$@.tmp
	mv $@.tmp $@
	@cat $@

clean:
	rm -rf $(OUT)
