# lit.mk - locked-image training (LiT) on Flickr8k: a frozen, pretrained image model's pooled
# features (MobileNet v1's TFLite embedding extractor, 1024-d, through cmr-encode) are the
# images; a projection and one residual layer on top of them, and a text tower from scratch,
# train contrastively (examples/flickr8k-lit.json: a features vision tower). Everything else is
# pipelines/train.mk: the same steps, variables and outputs, here in out/lit:
#
#   make -f pipelines/lit.mk            # about 15 minutes on 2 cores; results in out/lit/results.txt
#
# The from-scratch baseline it is compared with is make -f pipelines/train.mk (out/train).
PRETRAINED ?= ../shared/pretrained/mobilenet-tflite
FEATURES   ?= $(PRETRAINED)/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite
CONFIG     ?= examples/flickr8k-lit.json
SIZE       ?= 224
OUT        ?= out/lit
include pipelines/train.mk
