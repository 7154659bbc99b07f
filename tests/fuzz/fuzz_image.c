/* fuzz_image.c - libFuzzer target: image decoding chosen by the bytes (JPEG by libjpeg-turbo,
 * PNG by libpng, WebP by libwebp: lib/image.c, lib/image_codecs.c), EXIF orientation and
 * CLIP preprocessing of arbitrary bytes: an image or a clean error. */
#include <stdint.h>
#include <stdlib.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cmr_jpeg_opts o = {1, 64, 1u << 22};
	cmr_image im, out;
	int m, orient;
	char err[256];
	if (cmr_image_decode(data, size, &o, &im, &m, &orient, err, sizeof err) < 0) {
		if (!err[0])
			__builtin_trap();
		return 0;
	}
	if (cmr_image_orient(&im, orient) == 0) {
		static const uint8_t pad[3] = {0, 0, 0};
		if (cmr_preprocess(&im, CMR_RESIZE_SHORTER_CROP, 16, pad, &out) == 0)
			cmr_image_free(&out);
	}
	cmr_image_free(&im);
	return 0;
}
