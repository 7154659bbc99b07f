# pipelines/shards.mk - the local twin of pipelines/slurm/submit.sh: embed and index each
# image archive of a list (pipelines/slurm/shard.sh, in parallel with make -j), then merge.
#   make -f pipelines/shards.mk -j2 MODEL=DIR SHARDS=list.txt OUT=dir [INDEX_OPTS=...]
# OUT/index.idx is the same file the Slurm job array writes from the same list.
SHARDS ?= $(error set SHARDS to a file listing the archives, one per line)
OUT ?= out/shards
MODEL ?= $(error set MODEL to the checkpoint directory)
INDEX_OPTS ?=
HERE := $(dir $(lastword $(MAKEFILE_LIST)))
N := $(shell grep -c . $(SHARDS))
IDS := $(shell i=0; while [ $$i -lt $(N) ]; do printf '%05d ' $$i; i=$$((i + 1)); done)
export MODEL INDEX_OPTS

$(OUT)/index.idx: $(IDS:%=$(OUT)/idx/%.idx)
	cmr-index merge -o $@ $^

$(OUT)/idx/%.idx: $(SHARDS)
	sh $(HERE)slurm/shard.sh $* "$$(sed -n "$$(expr $* + 1)p" $(SHARDS))" $(OUT)
