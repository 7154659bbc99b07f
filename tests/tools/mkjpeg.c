/* mkjpeg.c - writes small synthetic JPEGs for the cmr-decode tests, with libjpeg-turbo.
 * Usage: mkjpeg KIND W H OUT.jpg
 *   rgb          a colour gradient (baseline)
 *   progressive  the same gradient, progressive
 *   gray         a grey gradient, one component
 *   cmyk         solid red as Adobe (inverted) CMYK: C=0 M=255 Y=255 K=0
 *   exif6        the gradient with an EXIF orientation of 6 (rotate 90 clockwise)
 *   marked       white with a black top-left quadrant (to see orientation) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: mkjpeg rgb|progressive|gray|cmyk|exif6|marked W H OUT.jpg\n");
		return 2;
	}
	const char *kind = argv[1];
	int w = atoi(argv[2]), h = atoi(argv[3]);
	FILE *f = fopen(argv[4], "wb");
	if (!f || w <= 0 || h <= 0) {
		perror(argv[4]);
		return 1;
	}
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr err;
	c.err = jpeg_std_error(&err);
	jpeg_create_compress(&c);
	jpeg_stdio_dest(&c, f);
	c.image_width = (JDIMENSION)w;
	c.image_height = (JDIMENSION)h;
	int gray = strcmp(kind, "gray") == 0, cmyk = strcmp(kind, "cmyk") == 0;
	c.input_components = gray ? 1 : cmyk ? 4 : 3;
	c.in_color_space = gray ? JCS_GRAYSCALE : cmyk ? JCS_CMYK : JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, 95, TRUE);
	if (strcmp(kind, "progressive") == 0)
		jpeg_simple_progression(&c);
	jpeg_start_compress(&c, TRUE);
	if (strcmp(kind, "exif6") == 0) {
		/* "Exif\0\0", little-endian TIFF header, one IFD entry: Orientation (0x0112),
		 * SHORT, count 1, value 6 */
		static const unsigned char exif[] = {
			'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0,
			0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};
		jpeg_write_marker(&c, JPEG_APP0 + 1, exif, sizeof exif);
	}
	JSAMPLE *row = malloc((size_t)w * (size_t)c.input_components);
	while (c.next_scanline < c.image_height) {
		int y = (int)c.next_scanline;
		for (int x = 0; x < w; x++) {
			JSAMPLE *p = row + (size_t)x * (size_t)c.input_components;
			if (gray) {
				p[0] = (JSAMPLE)((x + y) * 255 / (w + h));
			} else if (cmyk) {
				p[0] = 255; p[1] = 0; p[2] = 0; p[3] = 255; /* inverted: C=0 M=255 Y=255 K=0 */
			} else if (strcmp(kind, "marked") == 0) {
				int black = x < w / 2 && y < h / 2;
				p[0] = p[1] = p[2] = black ? 0 : 255;
			} else {
				p[0] = (JSAMPLE)(x * 255 / (w > 1 ? w - 1 : 1));
				p[1] = (JSAMPLE)(y * 255 / (h > 1 ? h - 1 : 1));
				p[2] = 128;
			}
		}
		jpeg_write_scanlines(&c, &row, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	free(row);
	return fclose(f) == 0 ? 0 : 1;
}
