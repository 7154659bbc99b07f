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
