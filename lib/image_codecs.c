/* image_codecs.c - PNG (libpng) and WebP (libwebp) decoding to 8-bit RGB as PIL's
 * Image.open(...).convert("RGB") gives it, and the decoder chosen by an image's bytes. */
#include "util.h"
#include "image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <webp/decode.h>

#define fail cmr_errf

int cmr_is_png(const void *buf, size_t len)
{
	return len >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0;
}

int cmr_is_webp(const void *buf, size_t len)
{
	const uint8_t *b = buf;
	return len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0;
}

int cmr_image_kind(const void *buf, size_t len)
{
	if (cmr_is_jpeg(buf, len))
		return CMR_IMG_JPEG;
	if (cmr_is_png(buf, len))
		return CMR_IMG_PNG;
	if (cmr_is_webp(buf, len))
		return CMR_IMG_WEBP;
	return CMR_IMG_NONE;
}

/* ---- PNG ---- */
typedef struct {
	const uint8_t *p;
	size_t len, at;
	jmp_buf jb;
	char msg[200];
} png_src;

static void png_on_error(png_structp png, png_const_charp msg)
{
	png_src *s = png_get_error_ptr(png);
	snprintf(s->msg, sizeof s->msg, "%s", msg);
	longjmp(s->jb, 1);
}

/* warnings (an sRGB profile libpng knows to be wrong, an ancillary chunk's CRC) do not stop
 * PIL either */
static void png_on_warning(png_structp png, png_const_charp msg)
{
	(void)png, (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
	png_src *s = png_get_io_ptr(png);
	if (n > s->len - s->at)
		png_error(png, "truncated file");
	memcpy(out, s->p + s->at, n);
	s->at += n;
}

/* One sample of a row in the decoded bit depth (8 or 16). */
static inline unsigned sample(const uint8_t *row, size_t i, int depth)
{
	return depth == 16 ? (unsigned)row[2 * i] << 8 | row[2 * i + 1] : row[i];
}

int cmr_png_decode(const void *buf, size_t len, uint64_t max_pixels, cmr_image *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	png_src s = {.p = buf, .len = len};
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_on_error, png_on_warning);
	png_infop info = png ? png_create_info_struct(png) : NULL;
	if (!info) {
		png_destroy_read_struct(&png, NULL, NULL);
		return fail(err, errlen, "out of memory");
	}
	uint8_t *volatile raw = NULL, *volatile rgb = NULL;
	png_bytep *volatile rows = NULL;
	if (setjmp(s.jb)) {
		png_destroy_read_struct(&png, &info, NULL);
		free(raw), free(rgb), free(rows);
		return fail(err, errlen, "corrupt PNG: %s", s.msg);
	}
	png_set_read_fn(png, &s, png_read_mem);
	png_set_user_limits(png, 1u << 24, 1u << 24);
	png_read_info(png, info);
	png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
	if ((uint64_t)w * h > max_pixels) {
		png_destroy_read_struct(&png, &info, NULL);
		return fail(err, errlen, "image of %ux%u pixels exceeds the limit of %llu pixels", (unsigned)w,
			    (unsigned)h, (unsigned long long)max_pixels);
	}
	int ct = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
	/* What PIL's PNG plugin and convert("RGB") do, kept exactly:
	 * - palette: the palette's colours; transparency (tRNS) is dropped, not composited;
	 * - gray of 1, 2, 4 bits: scaled to 0..255 (0x55, 0x11 steps); 8: replicated;
	 * - 16-bit gray without alpha: PIL reads mode "I" and convert clips it to 0..255 (values
	 *   above 255 become white), unlike every other 16-bit type, which keeps the high byte;
	 * - alpha of gray+alpha and RGBA dropped, not composited; gamma and colour profiles
	 *   ignored. */
	if (ct == PNG_COLOR_TYPE_PALETTE)
		png_set_palette_to_rgb(png);
	else if (ct == PNG_COLOR_TYPE_GRAY && depth < 8)
		png_set_expand_gray_1_2_4_to_8(png);
	png_set_interlace_handling(png);
	png_read_update_info(png, info);
	int ch = png_get_channels(png, info), d = png_get_bit_depth(png, info);
	size_t rowbytes = png_get_rowbytes(png, info);
	if ((ch < 1 || ch > 4) || (d != 8 && d != 16) || rowbytes != (size_t)w * ch * (d / 8))
		png_error(png, "unexpected layout after expansion");
	raw = malloc(rowbytes * h + 1);
	rows = malloc((size_t)h * sizeof *rows + 1);
	rgb = malloc((size_t)w * h * 3 + 1);
	if (!raw || !rows || !rgb)
		png_error(png, "out of memory");
	for (png_uint_32 y = 0; y < h; y++)
		rows[y] = raw + rowbytes * y;
	png_read_image(png, rows);
	/* not png_read_end: PIL does not need what follows the image data either */
	int gray16 = d == 16 && ch == 1;
	for (png_uint_32 y = 0; y < h; y++) {
		const uint8_t *r = rows[y];
		uint8_t *o = rgb + (size_t)y * w * 3;
		for (png_uint_32 x = 0; x < w; x++) {
			if (ch <= 2) {
				unsigned v = sample(r, (size_t)x * ch, d);
				uint8_t g = gray16 ? (uint8_t)(v > 255 ? 255 : v) : (uint8_t)(d == 16 ? v >> 8 : v);
				o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = g;
			} else
				for (int c = 0; c < 3; c++) {
					unsigned v = sample(r, (size_t)x * ch + c, d);
					o[3 * x + c] = (uint8_t)(d == 16 ? v >> 8 : v);
				}
		}
	}
	png_destroy_read_struct(&png, &info, NULL);
	free(raw);
	free(rows);
	out->w = out->full_w = (int)w;
	out->h = out->full_h = (int)h;
	out->c = 3;
	out->px = rgb;
	out->scale_m = 8;
	return 0;
}

/* ---- WebP ---- */
int cmr_webp_decode(const void *buf, size_t len, uint64_t max_pixels, cmr_image *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof *out);
	WebPBitstreamFeatures f;
	VP8StatusCode st = WebPGetFeatures(buf, len, &f);
	if (st != VP8_STATUS_OK)
		return fail(err, errlen, "corrupt WebP: %s", st == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated file"
							       : "not a valid bitstream");
	if (f.has_animation)
		return fail(err, errlen, "animated WebP (only still images are decoded)");
	if (f.width <= 0 || f.height <= 0 || (uint64_t)f.width * (uint64_t)f.height > max_pixels)
		return fail(err, errlen, "image of %dx%d pixels exceeds the limit of %llu pixels", f.width, f.height,
			    (unsigned long long)max_pixels);
	/* RGB with alpha dropped, not composited, as PIL's RGBA -> RGB; libwebp's default
	 * ("fancy") upsampling of the chroma, as PIL's decoder uses */
	size_t stride = (size_t)f.width * 3;
	uint8_t *px = malloc(stride * (size_t)f.height + 1);
	if (!px)
		return fail(err, errlen, "out of memory");
	if (!WebPDecodeRGBInto(buf, len, px, stride * (size_t)f.height, (int)stride)) {
		free(px);
		return fail(err, errlen, "corrupt WebP: the image data does not decode");
	}
	out->w = out->full_w = f.width;
	out->h = out->full_h = f.height;
	out->c = 3;
	out->px = px;
	out->scale_m = 8;
	return 0;
}

int cmr_image_decode(const void *buf, size_t len, const cmr_jpeg_opts *o, cmr_image *out, int *scale_m,
		     int *orientation, char *err, size_t errlen)
{
	*scale_m = 8;
	*orientation = 1;
	switch (cmr_image_kind(buf, len)) {
	case CMR_IMG_JPEG:
		return cmr_jpeg_decode(buf, len, o, out, scale_m, orientation, err, errlen);
	case CMR_IMG_PNG:
		return cmr_png_decode(buf, len, o->max_pixels, out, err, errlen);
	case CMR_IMG_WEBP:
		return cmr_webp_decode(buf, len, o->max_pixels, out, err, errlen);
	default:
		memset(out, 0, sizeof *out);
		return fail(err, errlen, "not a JPEG, PNG or WebP image");
	}
}
