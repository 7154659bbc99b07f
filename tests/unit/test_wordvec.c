/* test_wordvec.c - word vectors: the three formats give the same table, lookups, refusals with the line, a caption's words. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "text/wordvec.h"
#include "unit.h"

static int parse(cmr_wordvec *wv, const char *text, char *err, size_t errlen)
{
	return cmr_wordvec_parse(wv, text, strlen(text), "t", err, errlen);
}

TEST(wordvec_formats_give_one_table)
{
	const char *forms[] = {
		"dog 1 2 3\ncat -0.5 0 1e-2\nthe 7 8 9\n",
		"3 3\ndog 1 2 3\r\ncat -0.5 0 1e-2\nthe 7 8 9",
		"{\"words\": [\"dog\", \"cat\", \"the\"], \"vectors\": [[1, 2, 3], [-0.5, 0, 0.01], [7, 8, 9]]}",
		" {\"vectors\": {\"the\": [7, 8, 9], \"dog\": [1, 2, 3], \"cat\": [-0.5, 0, 0.01]}}",
	};
	for (int f = 0; f < 4; f++) {
		cmr_wordvec wv;
		char err[256];
		CHECK(parse(&wv, forms[f], err, sizeof err) == 0);
		CHECK(wv.dim == 3 && wv.n == 3);
		const float *d = cmr_wordvec_find(&wv, "dog"), *c = cmr_wordvec_find(&wv, "cat");
		CHECK(d && d[0] == 1 && d[2] == 3 && c && c[0] == -0.5f && c[2] == 0.01f);
		CHECK(!cmr_wordvec_find(&wv, "Dog") && !cmr_wordvec_find(&wv, "do") && !cmr_wordvec_find(&wv, ""));
		cmr_wordvec_free(&wv);
	}
}

TEST(wordvec_refusals_name_the_line)
{
	struct {
		const char *text, *msg;
	} bad[] = {
		{"dog 1 2\ncat 1\n", "t:2: 1 values, the file's vectors have 2"},
		{"dog 1 x\n", "t:1: value 2 is not a finite number"},
		{"dog 1 inf\n", "t:1: value 2 is not a finite number"},
		{"dog\n", "t:1: a word without numbers"},
		{"", "t: no word vectors"},
		{"{\"words\": [\"a\"], \"vectors\": []}", "t: 1 words and 0 vectors"},
		{"{\"vectors\": {\"a\": [1, \"b\"]}}", "t: value 2 of 'a' is not a finite number"},
		{"{\"vectors\": [1]}", "neither"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		cmr_wordvec wv;
		char err[256] = "";
		CHECK(parse(&wv, bad[i].text, err, sizeof err) == -1);
		if (!strstr(err, bad[i].msg))
			fprintf(stderr, "got '%s', expected '%s'\n", err, bad[i].msg);
		CHECK(strstr(err, bad[i].msg) != NULL);
	}
	/* a word given twice keeps its first vector, and is counted */
	cmr_wordvec wv;
	char err[256];
	CHECK(parse(&wv, "b 1\na 2\nb 3\n", err, sizeof err) == 0);
	CHECK(wv.n == 2 && wv.duplicates == 1 && cmr_wordvec_find(&wv, "b")[0] == 1);
	cmr_wordvec_free(&wv);
}

TEST(text_words_are_cleaned_lowercase_runs_of_letters_and_digits)
{
	const char *text = "A Dog &amp; a Caf\xc3\xa9-owner,  3 puppies!";
	const char *want[] = {"a", "dog", "a", "caf\xc3\xa9", "owner", "3", "puppies"};
	char **w;
	int n = cmr_text_words(text, strlen(text), &w);
	CHECK(n == 7);
	for (int i = 0; i < n; i++)
		CHECK(strcmp(w[i], want[i]) == 0);
	free(w[0]);
	free(w);
	CHECK(cmr_text_words(" ,;!", 4, &w) == 0 && w == NULL);
}

TEST(wordvec_bridge_finds_the_nearest_words_with_prototypes)
{
	/* a hand-made vocabulary: dog-like words near dog, cat-like near cat; only dog, cat and car
	 * have prototypes (candidates) */
	const char *text = "dog 1 0 0\npuppy 0.9 0.1 0\npooch 0.8 0 0.2\ncat 0 1 0\nkitten 0.1 0.9 0\ncar 0 0 1\n";
	cmr_wordvec wv;
	char err[256];
	CHECK(cmr_wordvec_parse(&wv, text, strlen(text), "t", err, sizeof err) == 0);
	size_t cand[3];
	const char *names[3] = {"car", "dog", "cat"};
	for (int i = 0; i < 3; i++)
		cand[i] = (size_t)(cmr_wordvec_find(&wv, names[i]) - wv.vec) / 3;
	size_t idx[3];
	float w[3];
	CHECK(cmr_wordvec_bridge(&wv, cmr_wordvec_find(&wv, "puppy"), cand, 3, 2, 1.0f, idx, w) == 2);
	CHECK(strcmp(wv.word[idx[0]], "dog") == 0 && strcmp(wv.word[idx[1]], "cat") == 0);
	/* softmax of the cosines over the two: cos(puppy, dog) = 0.9939, cos(puppy, cat) = 0.1104 */
	double c0 = 0.9 / sqrt(0.82), c1 = 0.1 / sqrt(0.82), e = exp(c1 - c0);
	CHECK(fabs(w[0] - 1 / (1 + e)) < 1e-6 && fabs(w[1] - e / (1 + e)) < 1e-6);
	CHECK(cmr_wordvec_bridge(&wv, cmr_wordvec_find(&wv, "pooch"), cand, 3, 1, 1.0f, idx, w) == 1);
	CHECK(strcmp(wv.word[idx[0]], "dog") == 0 && w[0] == 1.0f);
	CHECK(cmr_wordvec_bridge(&wv, cmr_wordvec_find(&wv, "kitten"), cand, 3, 5, 0.1f, idx, w) == 3);
	CHECK(strcmp(wv.word[idx[0]], "cat") == 0 && strcmp(wv.word[idx[1]], "dog") == 0 &&
	      strcmp(wv.word[idx[2]], "car") == 0);
	CHECK(w[0] > w[1] && w[1] > w[2] && fabs(w[0] + w[1] + w[2] - 1) < 1e-6);
	float zero[3] = {0, 0, 0};
	CHECK(cmr_wordvec_bridge(&wv, zero, cand, 3, 2, 1.0f, idx, w) == -1);
	cmr_wordvec_free(&wv);
}
