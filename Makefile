# cmr - cross-modal retrieval as small Unix tools.  Plain GNU make.
#
#   make                     build the tools into $(BUILD)/bin
#   make deps                install the Debian packages it needs (apt-get, as root/sudo)
#   make example             build and run the bundled example pipeline
#   make demo                train a tiny model on synthetic shapes, then index, query, evaluate
#   make check               build and run the test suite (C unit tests, CLI tests, man lint)
#   make check-asan          the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz                libFuzzer targets (clang) into $(BUILD)/fuzz
#   make install PREFIX=/usr/local DESTDIR=
#   make clean
#
# Variables: CC, CFLAGS, LDFLAGS, PREFIX, DESTDIR, BUILD, CUDA=0|1 (default: 1 if nvcc is
# on PATH), NVCC, CUDA_HOME, MPI=0|1 (default: 1 if Open MPI's pkg-config file is found),
# SAN=1 (sanitizers), WERROR=0|1 (default 1).

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
BUILD   ?= build
CC      ?= cc
CFLAGS  ?= -O2 -g
WERROR  ?= 1
SAN     ?= 0

# ---- dependencies (Debian: see .ci/run) ----
PKGS := libzstd libxxhash jansson libutf8proc libarchive libjpeg libexif libpng libwebp
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lzstd -lxxhash -ljansson -lutf8proc -larchive -ljpeg -lexif -lpng16 -lwebp)

# cairo draws cmr-query's contact sheets (that tool alone links it)
CAIRO_CFLAGS := $(shell pkg-config --cflags cairo 2>/dev/null)
CAIRO_LIBS   := $(shell pkg-config --libs cairo 2>/dev/null || echo -lcairo)

# OpenBLAS through pkg-config, else Debian's paths (used by the compute tools).
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null || echo -I/usr/include/x86_64-linux-gnu/openblas-pthread)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)

# ---- CUDA: detected, or forced with CUDA=0 / CUDA=1 ----
NVCC      ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC) 2>/dev/null)))
CUDA      ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
# Ampere (sm_80, and PTX for later chips) and Hopper (sm_90: the H100 and H200)
NVCCFLAGS ?= -O3 -std=c++17 -Xcompiler -Wall,-Wextra -Werror all-warnings \
	--generate-code arch=compute_80,code=[compute_80,sm_80] --generate-code arch=compute_90,code=sm_90

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wpointer-arith \
	-Wvla -Wformat=2 -Wno-format-nonliteral
ifeq ($(WERROR),1)
WARN += -Werror
endif
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif

# OpenMP threads the row loops and attention of the BLAS backend (OPENMP=0: one thread)
OPENMP ?= 1
ifeq ($(OPENMP),1)
OMPFLAGS := -fopenmp
else
OMPFLAGS := -Wno-unknown-pragmas
endif

ALL_CFLAGS  := -std=c11 -D_GNU_SOURCE -Ilib $(WARN) $(OMPFLAGS) $(PKG_CFLAGS) $(BLAS_CFLAGS) $(CFLAGS) $(SANFLAGS) -MMD -MP
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS) $(filter -fopenmp,$(OMPFLAGS))
LIBS        := $(PKG_LIBS) $(BLAS_LIBS) -lm -lpthread

LIB_SRC := lib/fe.c lib/origin.c lib/atomic.c lib/dist.c lib/util.c lib/image.c lib/image_codecs.c lib/eval.c lib/index.c \
	lib/format/stream.c lib/format/npy.c lib/format/safetensors.c lib/text/clip_tok.c lib/text/wordvec.c lib/knowledge.c \
	lib/backend/host.c lib/backend/ref.c lib/backend/blas.c lib/backend/grad.c lib/backend/devsim.c \
	lib/model/params.c lib/model/forward.c lib/model/train.c lib/model/run.c lib/model/adapter.c lib/model/levels.c \
	lib/model/tuning.c lib/tflite/tflite.c lib/tflite/qops.c lib/tflite/graph.c
ifeq ($(CUDA),1)
CUDA_OBJ := $(BUILD)/obj/lib/backend/cuda/devices.o $(BUILD)/obj/lib/backend/cuda/cuda.o
# cuBLAS is opened (dlopen) when the cuda backend starts: the tools neither need it to run
# nor pay for loading it (0.65 s and 215 MB at every start when linked)
LIBS     += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
NVCCFLAGS += -DCMR_CUBLAS_DIR='"$(CUDA_HOME)/lib64"'
ALL_CFLAGS += -DCMR_CUDA=1
else
LIB_SRC  += lib/backend/none.c
endif
# ---- MPI (Open MPI) for data-parallel cmr-train: detected, or forced with MPI=0 / MPI=1;
# linked --as-needed, so that only the programs that train depend on it ----
MPI       ?= $(if $(shell pkg-config --exists ompi-c 2>/dev/null && echo y),1,0)
ifeq ($(MPI),1)
$(BUILD)/obj/lib/dist.o: ALL_CFLAGS += -DCMR_MPI $(shell pkg-config --cflags ompi-c)
LIBS     += -Wl,--push-state,--as-needed $(shell pkg-config --libs ompi-c) -Wl,--pop-state
endif
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(CUDA_OBJ)
LIBCMR  := $(BUILD)/libcmr.a

TOOLS    := cmr-dump cmr-decode cmr-caption-ingest cmr-encode cmr-eval cmr-index cmr-query cmr-train cmr-promptpool cmr-knowledge
TOOL_BIN := $(TOOLS:%=$(BUILD)/bin/%)

UNIT_SRC := $(wildcard tests/unit/*.c)
TEST_BIN = $(BUILD)/tests/unit $(BUILD)/tests/fuzz-replay $(BUILD)/tests/mkgolden $(TEST_TOOLS:%=$(BUILD)/tests/%) \
	$(BUILD)/examples/mkworld $(BUILD)/examples/mkshapes

MAN1 := $(wildcard man/*.1)
MAN5 := $(wildcard man/*.5)
MAN7 := $(wildcard man/*.7)

.SECONDARY:
.PHONY: all check check-cuda check-asan fuzz install uninstall clean config deps example demo
all: $(TOOL_BIN)

# Debian packages cmr needs to build and test (make deps installs them; run as root or
# with sudo available).
DEBIAN_PACKAGES := build-essential pkg-config libzstd-dev libxxhash-dev libjansson-dev \
	libutf8proc-dev libarchive-dev libjpeg62-turbo-dev libexif-dev libpng-dev libwebp-dev libcairo2-dev libopenblas-dev libopenmpi-dev openmpi-bin slurmctld slurmd slurm-client munge mandoc man-db \
	bsdutils clang libclang-rt-14-dev tar gzip zstd zip time valgrind
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
deps:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES)

example: $(TOOL_BIN)
	sh examples/roundtrip.sh

# train a tiny CLIP from scratch on synthetic shapes, index, query, evaluate (a few minutes)
demo: $(TOOL_BIN) $(BUILD)/examples/mkshapes
	BUILD=$(BUILD) sh examples/demo.sh

$(BUILD)/examples/%: $(BUILD)/obj/examples/%.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBCMR) $(LIBS)

config:
	@echo "CC=$(CC) CFLAGS=$(CFLAGS) SAN=$(SAN) WERROR=$(WERROR)"
	@echo "deps: $(PKG_LIBS)"
	@echo "blas: $(BLAS_CFLAGS) $(BLAS_LIBS)"
	@echo "cuda: CUDA=$(CUDA) NVCC=$(NVCC) CUDA_HOME=$(CUDA_HOME)"
	@echo "mpi: MPI=$(MPI)"

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/obj/lib/backend/cuda/%.o: lib/backend/cuda/%.cu lib/backend/backend.h
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

$(LIBCMR): $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/bin/%.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCMR) $(LIBS)
$(BUILD)/obj/bin/cmr-query.o: ALL_CFLAGS += $(CAIRO_CFLAGS)
$(BUILD)/bin/cmr-query: LIBS += $(CAIRO_LIBS)

$(BUILD)/tests/unit: $(UNIT_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/tests/golden/examples.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCMR) $(LIBS)

FUZZ_TARGETS := stream npy tok image tuning index model caption tokfiles state kv labels tflite wordvec knowledge
$(BUILD)/tests/fuzz-replay: $(FUZZ_TARGETS:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o) \
		$(BUILD)/obj/tests/fuzz/replay.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCMR) $(LIBS)

# the replay driver links both targets under their own names
$(BUILD)/obj/tests/fuzz/fuzz_stream.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_stream_one
$(BUILD)/obj/tests/fuzz/fuzz_npy.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_npy_one
$(BUILD)/obj/tests/fuzz/fuzz_tok.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_tok_one
$(BUILD)/obj/tests/fuzz/fuzz_image.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_image_one
$(BUILD)/obj/tests/fuzz/fuzz_tuning.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_tuning_one
$(BUILD)/obj/tests/fuzz/fuzz_index.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_index_one
$(BUILD)/obj/tests/fuzz/fuzz_model.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_model_one
$(BUILD)/obj/tests/fuzz/fuzz_caption.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_caption_one
$(BUILD)/obj/tests/fuzz/fuzz_tokfiles.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_tokfiles_one
$(BUILD)/obj/tests/fuzz/fuzz_state.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_state_one
$(BUILD)/obj/tests/fuzz/fuzz_kv.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_kv_one
$(BUILD)/obj/tests/fuzz/fuzz_labels.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_labels_one
$(BUILD)/obj/tests/fuzz/fuzz_tflite.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_tflite_one
$(BUILD)/obj/tests/fuzz/fuzz_wordvec.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_wordvec_one
$(BUILD)/obj/tests/fuzz/fuzz_knowledge.o: ALL_CFLAGS += -DLLVMFuzzerTestOneInput=fuzz_knowledge_one

$(BUILD)/tests/mkgolden: $(BUILD)/obj/tests/golden/mkgolden.o $(BUILD)/obj/tests/golden/examples.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(filter %.o,$^) $(LIBCMR) $(LIBS)

# the test tools: one program per tests/tools/*.c
TEST_TOOLS := mkjpeg mkhf mkclip mkvec traincheck promptcheck ixpatch mktflite
$(TEST_TOOLS:%=$(BUILD)/tests/%): $(BUILD)/tests/%: $(BUILD)/obj/tests/tools/%.o $(LIBCMR)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBCMR) $(LIBS)

check: $(TOOL_BIN) $(TEST_BIN)
	@sh tests/run.sh $(BUILD)

# on a machine with an NVIDIA GPU: the cross-backend tests (tests/cuda/check.sh)
check-cuda: $(TOOL_BIN) $(TEST_BIN)
	@test "$(CUDA)" = 1 || { echo "check-cuda: this build has no CUDA (nvcc not found; make CUDA=1)"; exit 1; }
	@sh tests/cuda/check.sh $(BUILD)

check-asan:
	$(MAKE) BUILD=build/asan SAN=1 CFLAGS="-O1 -g" check

# libFuzzer builds (clang only): make fuzz, then e.g.
#   build/fuzz/fuzz_stream -max_total_time=60 tests/fuzz/corpus/stream
FUZZ_CC := clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -Ilib -g -O1 $(PKG_CFLAGS) $(BLAS_CFLAGS) -fsanitize=fuzzer,address,undefined
fuzz: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(filter-out lib/backend/none.c,$(filter lib/%.c,$(LIB_SRC))) lib/backend/none.c $(PKG_LIBS) $(BLAS_LIBS) -lm

install: $(TOOL_BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(TOOL_BIN) $(DESTDIR)$(BINDIR)/
	install -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(MAN5) $(DESTDIR)$(MANDIR)/man5/
	install -m 644 $(MAN7) $(DESTDIR)$(MANDIR)/man7/

uninstall:
	rm -f $(TOOLS:%=$(DESTDIR)$(BINDIR)/%)
	rm -f $(MAN1:man/%=$(DESTDIR)$(MANDIR)/man1/%) $(MAN5:man/%=$(DESTDIR)$(MANDIR)/man5/%) \
		$(MAN7:man/%=$(DESTDIR)$(MANDIR)/man7/%)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
