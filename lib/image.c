/* image.c - JPEG decoding, EXIF orientation, PIL-exact bicubic resampling, CLIP preprocessing. */
#include "util.h"
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <libexif/exif-data.h>

void cmr_image_free(cmr_image *im)
{
	free(im->px);
	im->px = NULL;
	im->w = im->h = 0;
}

#define fail cmr_errf

/* ---- resampling: the algorithm of PIL's Resample.c (ImagingResample, BICUBIC) ---- */

#define PRECISION_BITS (32 - 8 - 2)

/* Keys' cubic convolution kernel with a = -0.5, support 2. */
static double bicubic(double x)
{
	const double a = -0.5;
	if (x < 0.0)
		x = -x;
	if (x < 1.0)
		return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
	if (x < 2.0)
		return (((x - 5) * x + 8) * x - 4) * a;
	return 0.0;
}

/* Filter taps of one axis: output i reads inputs bounds[2i] .. bounds[2i] + bounds[2i+1] - 1
 * with fixed-point weights kk[i * ksize ...]. */
typedef struct {
	int ksize;
	int *bounds;
	int32_t *kk;
} taps;

static void taps_free(taps *t)
{
	free(t->bounds);
	free(t->kk);
}

/* in_extent: the input's content spans [0, in_extent) of its in_size pixels (PIL's box) */
static int taps_make(int in_size, double in_extent, int out_size, taps *t)
{
	double scale = in_extent / out_size;
	double filterscale = scale < 1.0 ? 1.0 : scale;
	double support = 2.0 * filterscale;
	int ksize = (int)ceil(support) * 2 + 1;
	t->ksize = ksize;
	t->bounds = malloc((size_t)out_size * 2 * sizeof(int));
	t->kk = calloc((size_t)out_size * (size_t)ksize, sizeof(int32_t));
	double *w = malloc((size_t)ksize * sizeof(double));
	if (!t->bounds || !t->kk || !w) {
		free(w);
		taps_free(t);
		return -1;
	}
	for (int xx = 0; xx < out_size; xx++) {
		double center = (xx + 0.5) * scale;
		double ww = 0.0, ss = 1.0 / filterscale;
		int xmin = (int)(center - support + 0.5); /* truncation, as in C */
		if (xmin < 0)
			xmin = 0;
		int xmax = (int)(center + support + 0.5);
		if (xmax > in_size)
			xmax = in_size;
		xmax -= xmin;
		for (int x = 0; x < xmax; x++) {
			w[x] = bicubic((x + xmin - center + 0.5) * ss);
			ww += w[x];
		}
		for (int x = 0; x < xmax; x++) {
			double v = ww != 0.0 ? w[x] / ww : w[x];
			/* round half away from zero to 22-bit fixed point */
			t->kk[xx * ksize + x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
						      : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
		}
		t->bounds[2 * xx] = xmin;
		t->bounds[2 * xx + 1] = xmax;
	}
	free(w);
	return 0;
}

static inline uint8_t clip8(int32_t v)
{
	v >>= PRECISION_BITS; /* arithmetic shift: floor */
	return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* out (rows x ow, c channels) = horizontal filter of in rows [y0, y0 + rows), columns of the
 * output [x0, x0 + ow) only. */
static void pass_h(const uint8_t *in, int iw, int c, int y0, int rows, const taps *t, int x0,
		   uint8_t *out, int ow)
{
	for (int y = 0; y < rows; y++) {
		const uint8_t *row = in + (size_t)(y0 + y) * iw * c;
		uint8_t *o = out + (size_t)y * ow * c;
		for (int xx = 0; xx < ow; xx++) {
			int xmin = t->bounds[2 * (x0 + xx)], n = t->bounds[2 * (x0 + xx) + 1];
			const int32_t *k = t->kk + (size_t)(x0 + xx) * t->ksize;
			for (int ch = 0; ch < c; ch++) {
				int32_t ss = 1 << (PRECISION_BITS - 1);
				for (int x = 0; x < n; x++)
					ss += row[(x + xmin) * c + ch] * k[x];
				o[xx * c + ch] = clip8(ss);
			}
		}
	}
}

/* out (oh x w) = vertical filter of in (whose first row is input row `first`), output rows
 * [y0, y0 + oh). */
static void pass_v(const uint8_t *in, int w, int c, int first, const taps *t, int y0,
		   uint8_t *out, int oh)
{
	size_t stride = (size_t)w * c;
	for (int yy = 0; yy < oh; yy++) {
		int ymin = t->bounds[2 * (y0 + yy)] - first, n = t->bounds[2 * (y0 + yy) + 1];
		const int32_t *k = t->kk + (size_t)(y0 + yy) * t->ksize;
		uint8_t *o = out + (size_t)yy * stride;
		for (size_t i = 0; i < stride; i++) {
			int32_t ss = 1 << (PRECISION_BITS - 1);
			for (int y = 0; y < n; y++)
				ss += in[(size_t)(y + ymin) * stride + i] * k[y];
			o[i] = clip8(ss);
		}
	}
}

/* Resizes to (ow x oh) and keeps the window [x0, x0+cw) x [y0, y0+ch) of the result. Each
 * output pixel depends only on its own coordinates, so the window equals a crop of the
 * full resize, without computing what the crop throws away. */
static int resize_window(const uint8_t *in, int iw, int ih, double ew, double eh, int c, int ow,
			 int oh, int x0, int y0, int cw, int chh, uint8_t *out)
{
	int need_h = ow != iw || ew != iw, need_v = oh != ih || eh != ih;
	if (!need_h && !need_v) {
		for (int y = 0; y < chh; y++)
			memcpy(out + (size_t)y * cw * c, in + ((size_t)(y0 + y) * iw + x0) * c,
			       (size_t)cw * c);
		return 0;
	}
	taps th = {0}, tv = {0};
	uint8_t *tmp = NULL;
	int rc = -1;
	if ((need_h && taps_make(iw, ew, ow, &th) < 0) || (need_v && taps_make(ih, eh, oh, &tv) < 0))
		goto done;
	/* input rows the vertical pass will read */
	int first = y0, last = y0 + chh;
	if (need_v) {
		first = tv.bounds[2 * y0];
		last = tv.bounds[2 * (y0 + chh - 1)] + tv.bounds[2 * (y0 + chh - 1) + 1];
	}
	if (need_h && need_v) {
		tmp = malloc((size_t)(last - first) * cw * c);
		if (!tmp)
			goto done;
		pass_h(in, iw, c, first, last - first, &th, x0, tmp, cw);
		pass_v(tmp, cw, c, first, &tv, y0, out, chh);
	} else if (need_h) {
		pass_h(in, iw, c, y0, chh, &th, x0, out, cw);
	} else {
		/* vertical only: the columns of the window */
		tmp = malloc((size_t)ih * cw * c);
		if (!tmp)
			goto done;
		for (int y = 0; y < ih; y++)
			memcpy(tmp + (size_t)y * cw * c, in + ((size_t)y * iw + x0) * c, (size_t)cw * c);
		pass_v(tmp, cw, c, 0, &tv, y0, out, chh);
	}
	rc = 0;
done:
	free(tmp);
	taps_free(&th);
	taps_free(&tv);
	return rc;
}

int cmr_resize_bicubic(const uint8_t *in, int iw, int ih, int c, uint8_t *out, int ow, int oh)
{
	return resize_window(in, iw, ih, iw, ih, c, ow, oh, 0, 0, ow, oh, out);
}

void cmr_shorter_side_size(int w, int h, int s, int *ow, int *oh)
{
	int shorter = w <= h ? w : h, longer = w <= h ? h : w;
	/* Python: int(size * long / short), a correctly rounded division then truncation */
	int nl = (int)((double)((long long)s * longer) / shorter);
	*ow = w <= h ? s : nl;
	*oh = w <= h ? nl : s;
}

/* Python 3's round(d / 2.0) for an integer d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
	int k = d / 2;
	if (d % 2 == 0)
		return k;
	return k % 2 == 0 ? k : k + 1;
}

int cmr_preprocess(const cmr_image *in, int mode, int s, const uint8_t pad_rgb[3], cmr_image *out)
{
	int c = in->c;
	memset(out, 0, sizeof *out);
	out->c = c;
	if (mode == CMR_RESIZE_NONE) {
		size_t n = (size_t)in->w * in->h * c;
		out->w = out->full_w = in->w;
		out->h = out->full_h = in->h;
		out->px = malloc(n ? n : 1);
		if (!out->px)
			return -1;
		memcpy(out->px, in->px, n);
		return 0;
	}
	/* sizes follow the full image; sampling follows its extent in the decoded pixels */
	int m = in->scale_m ? in->scale_m : 8;
	int fw = in->full_w ? in->full_w : in->w, fh = in->full_h ? in->full_h : in->h;
	double ew = m == 8 ? in->w : fw * m / 8.0, eh = m == 8 ? in->h : fh * m / 8.0;
	out->w = out->h = out->full_w = out->full_h = s;
	out->px = malloc((size_t)s * s * c);
	if (!out->px)
		return -1;
	int rc;
	if (mode == CMR_RESIZE_SQUASH) {
		rc = resize_window(in->px, in->w, in->h, ew, eh, c, s, s, 0, 0, s, s, out->px);
	} else if (mode == CMR_RESIZE_SHORTER_CROP) {
		int rw, rh;
		cmr_shorter_side_size(fw, fh, s, &rw, &rh);
		/* torchvision CenterCrop: int(round((size - crop) / 2.0)) */
		int top = half_round_even(rh - s), left = half_round_even(rw - s);
		rc = resize_window(in->px, in->w, in->h, ew, eh, c, rw, rh, left, top, s, s, out->px);
	} else {
		int nw, nh;
		if (fw >= fh) {
			nw = s;
			nh = (int)((2LL * s * fh + fw) / (2LL * fw));
		} else {
			nh = s;
			nw = (int)((2LL * s * fw + fh) / (2LL * fh));
		}
		nw = nw < 1 ? 1 : nw;
		nh = nh < 1 ? 1 : nh;
		for (size_t i = 0; i < (size_t)s * s; i++)
			memcpy(out->px + i * c, pad_rgb, (size_t)c);
		uint8_t *tmp = malloc((size_t)nw * nh * c);
		rc = tmp ? resize_window(in->px, in->w, in->h, ew, eh, c, nw, nh, 0, 0, nw, nh, tmp) : -1;
		if (rc == 0) {
			int ox = (s - nw) / 2, oy = (s - nh) / 2;
			for (int y = 0; y < nh; y++)
				memcpy(out->px + ((size_t)(oy + y) * s + ox) * c, tmp + (size_t)y * nw * c,
				       (size_t)nw * c);
		}
		free(tmp);
	}
	if (rc < 0)
		cmr_image_free(out);
	return rc;
}

/* ---- EXIF orientation ---- */
int cmr_image_orient(cmr_image *im, int o)
{
	if (o < 2 || o > 8)
		return 0;
	int w = im->w, h = im->h, c = im->c;
	int swap = o >= 5;
	int ow = swap ? h : w, oh = swap ? w : h;
	uint8_t *out = malloc((size_t)w * h * c);
	if (!out)
		return -1;
	for (int y = 0; y < oh; y++)
		for (int x = 0; x < ow; x++) {
			int sx, sy; /* source pixel of output (x, y) */
			switch (o) {
			case 2: sx = w - 1 - x; sy = y; break;         /* mirror */
			case 3: sx = w - 1 - x; sy = h - 1 - y; break; /* rotate 180 */
			case 4: sx = x; sy = h - 1 - y; break;         /* flip */
			case 5: sx = y; sy = x; break;                 /* transpose */
			case 6: sx = y; sy = h - 1 - x; break;         /* rotate 90 clockwise */
			case 7: sx = w - 1 - y; sy = h - 1 - x; break; /* transverse */
			default: sx = w - 1 - y; sy = x; break;        /* 8: rotate 90 counter-clockwise */
			}
			memcpy(out + ((size_t)y * ow + x) * c, im->px + ((size_t)sy * w + sx) * c, (size_t)c);
		}
	free(im->px);
	im->px = out;
	im->w = ow;
	im->h = oh;
	if (swap) {
		int t = im->full_w;
		im->full_w = im->full_h;
		im->full_h = t;
	}
	return 0;
}

static int exif_orientation(j_decompress_ptr cinfo)
{
	for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
		if (m->marker != JPEG_APP0 + 1 || m->data_length < 6 || memcmp(m->data, "Exif\0\0", 6) != 0)
			continue;
		ExifData *ed = exif_data_new_from_data(m->data, m->data_length);
		if (!ed)
			return 1;
		int o = 1;
		ExifEntry *e = exif_data_get_entry(ed, EXIF_TAG_ORIENTATION);
		if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->size >= 2)
			o = exif_get_short(e->data, exif_data_get_byte_order(ed));
		exif_data_unref(ed);
		return o >= 1 && o <= 8 ? o : 1;
	}
	return 1;
}

/* ---- JPEG ---- */
int cmr_is_jpeg(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	return len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff;
}

typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
	int warnings;
} jerr_t;

static void on_error(j_common_ptr cinfo)
{
	jerr_t *e = (jerr_t *)cinfo->err;
	(*cinfo->err->format_message)(cinfo, e->msg);
	longjmp(e->jb, 1);
}

static void on_message(j_common_ptr cinfo, int level)
{
	jerr_t *e = (jerr_t *)cinfo->err;
	if (level < 0 && e->warnings++ == 0) /* a warning: corrupt or truncated data */
		(*cinfo->err->format_message)(cinfo, e->msg);
}

unsigned char *cmr_jpeg_encode(const uint8_t *rgb, int w, int h, int quality, size_t *len, char *err, size_t errlen)
{
	struct jpeg_compress_struct c;
	jerr_t jerr;
	memset(&jerr, 0, sizeof jerr);
	/* volatile: modified between setjmp and longjmp */
	unsigned char *volatile buf = NULL;
	unsigned long n = 0;
	c.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = on_error;
	if (setjmp(jerr.jb)) {
		cmr_errf(err, errlen, "JPEG encoding: %s", jerr.msg);
		jpeg_destroy_compress(&c);
		free(buf);
		return NULL;
	}
	jpeg_create_compress(&c);
	jpeg_mem_dest(&c, (unsigned char **)&buf, &n);
	c.image_width = (JDIMENSION)w;
	c.image_height = (JDIMENSION)h;
	c.input_components = 3;
	c.in_color_space = JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, quality, TRUE);
	jpeg_start_compress(&c, TRUE);
	while (c.next_scanline < c.image_height) {
		JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
		jpeg_write_scanlines(&c, &row, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	*len = n;
	return buf;
}

int cmr_jpeg_decode(const void *buf, size_t len, const cmr_jpeg_opts *o, cmr_image *out,
		    int *scale_m, int *orientation, char *err, size_t errlen)
{
	struct jpeg_decompress_struct cinfo;
	jerr_t jerr;
	/* volatile: modified between setjmp and longjmp */
	uint8_t *volatile px = NULL;
	volatile int created = 0;
	memset(out, 0, sizeof *out);
	memset(&jerr, 0, sizeof jerr);
	cinfo.err = jpeg_std_error(&jerr.pub);
	jerr.pub.error_exit = on_error;
	jerr.pub.emit_message = on_message;
	if (setjmp(jerr.jb)) {
		if (created)
			jpeg_destroy_decompress(&cinfo);
		free(px);
		return fail(err, errlen, "corrupt JPEG: %s", jerr.msg);
	}
	jpeg_create_decompress(&cinfo);
	created = 1;
	if (len > 0xffffffffu) {
		jpeg_destroy_decompress(&cinfo);
		return fail(err, errlen, "JPEG larger than 4 GiB");
	}
	jpeg_mem_src(&cinfo, (const unsigned char *)buf, (unsigned long)len);
	if (o->apply_exif)
		jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xffff);
	jpeg_read_header(&cinfo, TRUE);
	uint64_t npx = (uint64_t)cinfo.image_width * cinfo.image_height;
	if (npx > o->max_pixels) {
		jpeg_destroy_decompress(&cinfo);
		return fail(err, errlen, "image of %ux%u pixels exceeds the limit of %llu pixels",
			    cinfo.image_width, cinfo.image_height, (unsigned long long)o->max_pixels);
	}
	*orientation = o->apply_exif ? exif_orientation(&cinfo) : 1;
	int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
	cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
	int m = 8;
	if (o->min_short > 0) {
		unsigned shorter = cinfo.image_width < cinfo.image_height ? cinfo.image_width : cinfo.image_height;
		for (int k = 1; k < 8; k++)
			if ((shorter * (unsigned)k + 7) / 8 >= (unsigned)o->min_short) {
				m = k;
				break;
			}
	}
	cinfo.scale_num = (unsigned)m;
	cinfo.scale_denom = 8;
	*scale_m = m;
	jpeg_start_decompress(&cinfo);
	int w = (int)cinfo.output_width, h = (int)cinfo.output_height, nc = cinfo.output_components;
	size_t row = (size_t)w * nc;
	px = malloc(row * h + 1);
	if (!px)
		longjmp(jerr.jb, 1);
	while (cinfo.output_scanline < cinfo.output_height) {
		JSAMPROW r = px + row * cinfo.output_scanline;
		jpeg_read_scanlines(&cinfo, &r, 1);
	}
	jpeg_finish_decompress(&cinfo);
	int inverted = cinfo.saw_Adobe_marker;
	unsigned cinfo_w = cinfo.image_width, cinfo_h = cinfo.image_height;
	jpeg_destroy_decompress(&cinfo);
	created = 0;
	if (jerr.warnings) {
		free(px);
		return fail(err, errlen, "corrupt JPEG data: %s", jerr.msg);
	}
	if (cmyk) {
		/* PIL: CMYK (inverted when written by Adobe software) to RGB:
		 * R = (255 - C) * (255 - K) / 255, rounded as MULDIV255 does */
		uint8_t *p = px;
		for (size_t i = 0; i < (size_t)w * h; i++) {
			int k = inverted ? p[4 * i + 3] : 255 - p[4 * i + 3];
			for (int ch = 0; ch < 3; ch++) {
				int v = inverted ? p[4 * i + ch] : 255 - p[4 * i + ch];
				int t = v * k + 128;
				p[3 * i + ch] = (uint8_t)((t + (t >> 8)) >> 8);
			}
		}
	}
	out->w = w;
	out->h = h;
	out->c = 3;
	out->px = px;
	out->full_w = (int)cinfo_w;
	out->full_h = (int)cinfo_h;
	out->scale_m = m;
	return 0;
}
