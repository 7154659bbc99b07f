/* mkshapes.c - a synthetic image-text dataset for cmr's demo: each image shows one shape
 * (circle, square, triangle or cross) of one colour (red, green, blue, yellow, purple, white),
 * small or large, in one of five places (top left, top right, bottom left, bottom right,
 * centre), jittered, on a noisy dark background; its captions say so in several templates.
 * Written as a webdataset tar (KEY.jpg, KEY.txt with a caption per line) with libarchive and
 * lib/image.c's JPEG encoder (libjpeg-turbo), from a seed: the same bytes on every machine.
 *
 *   mkshapes [--distinct] [--size S] [--prefix P] N SEED > shards.tar
 *
 * --distinct draws N different (shape, colour, size, place) combinations (at most 240), so
 * that a caption names exactly one image of the set: held-out sets where R@1 can reach 100%. */
#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "wds.h"

static const char *shapes[] = {"circle", "square", "triangle", "cross"};
static const char *colours[] = {"red", "green", "blue", "yellow", "purple", "white"};
static const unsigned char rgb[][3] = {{220, 40, 40}, {40, 200, 60}, {50, 80, 230}, {235, 220, 40}, {160, 60, 200}, {240, 240, 240}};
static const char *sizes[] = {"small", "large"};
static const char *places[] = {"top left", "top right", "bottom left", "bottom right", "centre"};
enum { NSHAPE = 4, NCOLOUR = 6, NSIZE = 2, NPLACE = 5, NCOMBO = NSHAPE * NCOLOUR * NSIZE * NPLACE };

static unsigned long long rng_state;
static unsigned rnd(void) /* PCG32 */
{
	unsigned long long old = rng_state;
	rng_state = old * 6364136223846793005ULL + 1442695040888963407ULL;
	unsigned x = (unsigned)(((old >> 18) ^ old) >> 27), r = (unsigned)(old >> 59);
	return x >> r | x << ((32 - r) & 31);
}
static int uni(int n) { return (int)(rnd() % (unsigned)n); }

/* is (x, y) inside the shape centred at (cx, cy) of half-size r? */
static int inside(int shape, int x, int y, int cx, int cy, int r)
{
	int dx = x - cx, dy = y - cy, ax = dx < 0 ? -dx : dx, ay = dy < 0 ? -dy : dy;
	switch (shape) {
	case 0: return dx * dx + dy * dy <= r * r;
	case 1: return ax <= r * 4 / 5 && ay <= r * 4 / 5;
	case 2: return dy <= r * 4 / 5 && dy >= -r && 2 * ax <= dy + r; /* apex up */
	default: return (ax <= r / 3 && ay <= r) || (ay <= r / 3 && ax <= r);
	}
}


int main(int argc, char **argv)
{
	int distinct = 0, S = 64, i = 1;
	const char *prefix = "shape";
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (strcmp(argv[i], "--distinct") == 0)
			distinct = 1;
		else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
			S = atoi(argv[++i]);
		else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc)
			prefix = argv[++i];
		else
			break;
	}
	if (argc - i != 2 || S < 32 || S > 1024) {
		fprintf(stderr, "usage: mkshapes [--distinct] [--size S] [--prefix P] N SEED > shards.tar\n");
		return 2;
	}
	int n = atoi(argv[i]);
	rng_state = strtoull(argv[i + 1], NULL, 10) * 0x9e3779b97f4a7c15ULL + 11;
	if (n < 1 || (distinct && n > NCOMBO)) {
		fprintf(stderr, "mkshapes: N must be 1..%d with --distinct\n", NCOMBO);
		return 2;
	}
	if (isatty(1)) {
		fprintf(stderr, "mkshapes: refusing to write a tar to a terminal\n");
		return 2;
	}
	int combo[NCOMBO];
	for (int c = 0; c < NCOMBO; c++)
		combo[c] = c;
	for (int c = NCOMBO - 1; c > 0; c--) {
		int j = uni(c + 1), t = combo[c];
		combo[c] = combo[j];
		combo[j] = t;
	}
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_FILE(a, stdout) != ARCHIVE_OK) {
		fprintf(stderr, "mkshapes: %s\n", archive_error_string(a));
		return 1;
	}
	unsigned char *px = malloc((size_t)S * S * 3);
	for (int k = 0; k < n; k++) {
		int c = distinct ? combo[k] : uni(NCOMBO);
		int shape = c % NSHAPE, colour = c / NSHAPE % NCOLOUR, size = c / (NSHAPE * NCOLOUR) % NSIZE,
		    place = c / (NSHAPE * NCOLOUR * NSIZE);
		int r = S * (size ? 13 : 7) / 64, q = S / 4, j = S / 16;
		int cx = place == 4 ? S / 2 : place % 2 ? S - q : q, cy = place == 4 ? S / 2 : place >= 2 ? S - q : q;
		cx += uni(2 * j + 1) - j;
		cy += uni(2 * j + 1) - j;
		int bg = 30 + uni(40);
		unsigned char col[3];
		for (int ch = 0; ch < 3; ch++) {
			int v = rgb[colour][ch] + uni(41) - 20;
			col[ch] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
		}
		for (int y = 0; y < S; y++)
			for (int x = 0; x < S; x++) {
				int in = inside(shape, x, y, cx, cy, r);
				for (int ch = 0; ch < 3; ch++) {
					int v = in ? col[ch] + uni(17) - 8 : bg + uni(21) - 10;
					px[((size_t)y * S + x) * 3 + ch] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
				}
			}
		char key[64], name[80], txt[1024];
		snprintf(key, sizeof key, "%s%05d", prefix, k);
		size_t len = 0;
		char err[256];
		unsigned char *jp = cmr_jpeg_encode(px, S, S, 90, &len, err, sizeof err);
		if (!jp) {
			fprintf(stderr, "mkshapes: %s\n", err);
			return 1;
		}
		snprintf(name, sizeof name, "%s.jpg", key);
		wds_put(a, "mkshapes", name, jp, len);
		free(jp);
		const char *sh = shapes[shape], *co = colours[colour], *si = sizes[size], *pl = places[place];
		snprintf(txt, sizeof txt,
			 "a %s %s %s in the %s\n"
			 "%s %s %s, %s\n"
			 "there is a %s %s %s at the %s of the picture\n",
			 si, co, sh, pl, co, sh, si, pl, si, co, sh, pl);
		snprintf(name, sizeof name, "%s.txt", key);
		wds_put(a, "mkshapes", name, txt, strlen(txt));
	}
	free(px);
	if (archive_write_close(a) != ARCHIVE_OK) {
		fprintf(stderr, "mkshapes: %s\n", archive_error_string(a));
		return 1;
	}
	archive_write_free(a);
	return 0;
}
