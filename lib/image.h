/* image.h - 8-bit RGB images: JPEG (libjpeg-turbo), PNG (libpng) and WebP (libwebp)
 * decoding, EXIF orientation (libexif),
 * resampling that reproduces PIL's antialiased bicubic exactly, and CLIP's preprocessing.
 * Like stream.h this layer never prints or exits. */
#ifndef CMR_IMAGE_H
#define CMR_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cmr_image {
	int w, h;    /* pixels */
	int c;       /* channels: 3 (RGB) */
	uint8_t *px; /* h rows of w*c bytes, top to bottom; malloc'ed */
	/* A JPEG decoded with DCT-domain scaling M/8 holds an image of full_w x full_h pixels
	 * in w x h = ceil(full * M / 8) pixels; the content spans full * M / 8 of them.
	 * Resampling uses that extent, so the result has the geometry of a full decode.
	 * For other images full_w = w, full_h = h, scale_m = 8 (or 0, taken as 8). */
	int full_w, full_h, scale_m;
} cmr_image;

void cmr_image_free(cmr_image *im);

/* ---- JPEG ---- */
typedef struct cmr_jpeg_opts {
	int apply_exif;      /* rotate/flip by the EXIF orientation tag */
	int min_short;       /* DCT-domain scaling: the largest reduction M/8 that keeps the
			      * shorter side >= min_short (0: decode at full size) */
	uint64_t max_pixels; /* refuse images with more pixels than this (before scaling) */
} cmr_jpeg_opts;

/* Returns 1 if buf starts like a JPEG file (FF D8 FF). */
int cmr_is_jpeg(const void *buf, size_t len);

/* Decodes a JPEG from memory to RGB (grayscale replicated; CMYK and YCCK converted as PIL
 * does, Adobe-inverted or not). Corrupt data, truncation and libjpeg warnings are errors.
 * Returns 0, or -1 with a message in err. On success *scale_m is the DCT scale M (of 8) used
 * and *orientation the EXIF orientation (1 if absent). */
int cmr_jpeg_decode(const void *buf, size_t len, const cmr_jpeg_opts *o, cmr_image *out,
		    int *scale_m, int *orientation, char *err, size_t errlen);

/* Encodes RGB pixels [h, w, 3] as a baseline JPEG of the given quality (1..100). Returns the
 * file's bytes (free() them) and their number in *len, or NULL with a message in err. */
unsigned char *cmr_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, size_t *len, char *err, size_t errlen);

/* ---- PNG, WebP, and the decoder an image's bytes choose (image_codecs.c) ---- */
enum { CMR_IMG_NONE, CMR_IMG_JPEG, CMR_IMG_PNG, CMR_IMG_WEBP };
/* Whether buf starts like a PNG (its 8-byte signature) or a WebP (RIFF....WEBP) file. */
int cmr_is_png(const void *buf, size_t len);
int cmr_is_webp(const void *buf, size_t len);
/* CMR_IMG_JPEG, _PNG, _WEBP by the first bytes, or CMR_IMG_NONE. */
int cmr_image_kind(const void *buf, size_t len);
/* Decodes a PNG (any colour type, bit depth and interlace) or a still WebP (lossy or
 * lossless) from memory to RGB exactly as PIL's Image.open(f).convert("RGB"): palettes
 * expanded, transparency and alpha dropped (not composited), 16 bits to the high byte except
 * 16-bit gray without alpha, which PIL clips to 0..255 (see image_codecs.c). Corrupt or
 * truncated data, an animated WebP, or more than max_pixels pixels are errors. Returns 0, or
 * -1 with a message in err. */
int cmr_png_decode(const void *buf, size_t len, uint64_t max_pixels, cmr_image *out, char *err, size_t errlen);
int cmr_webp_decode(const void *buf, size_t len, uint64_t max_pixels, cmr_image *out, char *err, size_t errlen);
/* Any of the three, chosen by the bytes: JPEG as cmr_jpeg_decode with o; PNG and WebP with
 * o->max_pixels (then *scale_m = 8 and *orientation = 1). */
int cmr_image_decode(const void *buf, size_t len, const cmr_jpeg_opts *o, cmr_image *out, int *scale_m,
		     int *orientation, char *err, size_t errlen);

/* Applies an EXIF orientation (1..8) in place (may swap w and h). Returns 0 or -1. */
int cmr_image_orient(cmr_image *im, int orientation);

/* ---- resampling ---- */
/* Resizes in (iw x ih, c channels) to out (ow x oh) with PIL's antialiased bicubic filter
 * (Image.resize(..., BICUBIC)): separable, horizontal pass first, 22-bit fixed-point
 * coefficients, 8-bit rounding between passes. Returns 0 or -1 (out of memory). */
int cmr_resize_bicubic(const uint8_t *in, int iw, int ih, int c, uint8_t *out, int ow, int oh);

/* The preprocessing modes of cmr-decode. */
enum cmr_resize_mode {
	CMR_RESIZE_SHORTER_CROP, /* shorter side to S (torchvision Resize), center crop S x S */
	CMR_RESIZE_SQUASH,       /* both sides to S, aspect not kept */
	CMR_RESIZE_PAD,          /* longer side to S, centered on an S x S canvas */
	CMR_RESIZE_NONE,         /* as decoded */
};

/* Size that torchvision's Resize(S) gives an image of w x h (shorter side S, the longer
 * int(S * long / short)). */
void cmr_shorter_side_size(int w, int h, int s, int *ow, int *oh);

/* Preprocesses in into out (allocated) by mode to size S; pad fills with pad_rgb. */
int cmr_preprocess(const cmr_image *in, int mode, int s, const uint8_t pad_rgb[3], cmr_image *out);

#endif
