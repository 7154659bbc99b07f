/* test_knowledge.c - concept knowledge: building prototypes from a pool, the file round trip and its refusals, out-of-vocabulary bridging, the mapping's gradients against finite differences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knowledge.h"
#include "format/safetensors.h"
#include "format/stream.h"
#include "unit.h"
#include "util.h"

static int wv_parse(cmr_wordvec *wv, const char *text)
{
	char err[256];
	return cmr_wordvec_parse(wv, text, strlen(text), "t", err, sizeof err);
}

/* a pool of 7 images in 3 classes, features e_0 .. e_3 in 4 dimensions */
static void make_pool(cmr_knowledge *kn, int centre, int min_count, float min_prob, char *err, size_t errlen, int *rc)
{
	static const float x[7 * 4] = {
		1, 0, 0, 0, /* 0: class 1, dog */
		0, 1, 0, 0, /* 1: class 1, dog */
		0, 0, 1, 0, /* 2: class 2, cat (too unsure at 0.5) */
		0, 0, 1, 0, /* 3: class 2, cat */
		0, 0, 0, 1, /* 4: class 3, car */
		0.6f, 0.8f, 0, 0, /* 5: class 0, background */
		0, 0.6f, 0.8f, 0, /* 6: class 3, car */
	};
	static const uint32_t cls[7] = {1, 1, 2, 2, 3, 0, 3};
	static const float prob[7] = {0.9f, 0.6f, 0.4f, 0.7f, 0.99f, 0.9f, 0.8f};
	static char *labels[4] = {"background", "dog, the dog", "tabby cat", "sports car, a car"};
	cmr_wordvec wv;
	wv_parse(&wv, "dog 1 0 0\ncat 0 1 0\ncar 0 0 1\nsports 0 0.6 0.8\nthe 1 1 1\na 1 2 3\n");
	cmr_wordset stop;
	const char *sw = "# function words\nthe\n a \n\nof # and so on\n";
	cmr_wordset_parse(&stop, sw, strlen(sw), "stop", err, errlen);
	cmr_knowledge_pool pool = {x, 7, 4, cls, prob, labels, 4};
	*rc = cmr_knowledge_build(kn, &pool, &wv, &stop, min_prob, min_count, centre, err, errlen);
	cmr_wordvec_free(&wv);
	cmr_wordset_free(&stop);
}

TEST(knowledge_build_averages_confident_images)
{
	cmr_knowledge kn;
	char err[256];
	int rc;
	make_pool(&kn, 0, 1, 0.5f, err, sizeof err, &rc);
	CHECK(rc == 0);
	/* concepts: car, cat, dog, sports (tabby has no vector; background none; the, a stop words) */
	CHECK(kn.k == 4 && kn.dv == 4 && kn.dw == 3);
	CHECK(strcmp(kn.words.word[0], "car") == 0 && strcmp(kn.words.word[1], "cat") == 0 &&
	      strcmp(kn.words.word[2], "dog") == 0 && strcmp(kn.words.word[3], "sports") == 0);
	CHECK(kn.count[0] == 2 && kn.count[1] == 1 && kn.count[2] == 2 && kn.count[3] == 2);
	/* dog: mean of e0 and e1 (image 1 counted once though its label names dog twice), unit */
	const float *d = kn.proto + 2 * 4;
	CHECK(fabsf(d[0] - 0.70710678f) < 1e-6f && fabsf(d[1] - 0.70710678f) < 1e-6f && d[2] == 0 && d[3] == 0);
	/* cat: image 3 alone (image 2 is under 0.5) */
	CHECK(kn.proto[4 + 2] == 1 && kn.proto[4 + 0] == 0);
	/* car: e3 + (0, .6, .8, 0), halved, unit */
	double n = sqrt(0.36 + 0.64 + 1);
	CHECK(fabs(kn.proto[1] - 0.6 / n) < 1e-6 && fabs(kn.proto[2] - 0.8 / n) < 1e-6 && fabs(kn.proto[3] - 1 / n) < 1e-6);
	CHECK(fabsf(kn.words.vec[3 * 3 + 1] - 0.6f) < 1e-6f); /* unit word vectors */
	for (int i = 0; i < 4; i++)
		CHECK(kn.centre[i] == 0);
	cmr_knowledge_free(&kn);
	/* --min-count 2 leaves cat out; the centre is the mean of all 7 features */
	make_pool(&kn, 1, 2, 0.5f, err, sizeof err, &rc);
	CHECK(rc == 0 && kn.k == 3 && strcmp(kn.words.word[1], "dog") == 0);
	CHECK(fabsf(kn.centre[0] - 1.6f / 7) < 1e-6f && fabsf(kn.centre[2] - 2.8f / 7) < 1e-6f);
	float want[4];
	for (int i = 0; i < 4; i++)
		want[i] = (i < 2 ? 0.5f : 0) - kn.centre[i];
	cmr_unit_rows(want, 1, 4);
	for (int i = 0; i < 4; i++)
		CHECK(fabsf(kn.proto[4 + i] - want[i]) < 1e-6f);
	cmr_knowledge_free(&kn);
	/* nothing confident enough */
	make_pool(&kn, 1, 1, 1.0f, err, sizeof err, &rc);
	CHECK(rc == -1 && strstr(err, "no concept has 1 image with a probability of at least 1"));
}

/* a concept holding every image of the pool has the centre as its mean: no direction, left out */
TEST(knowledge_build_leaves_out_a_concept_at_the_centre)
{
	static const float x[3 * 2] = {1, 0, 0, 1, 0.6f, 0.8f};
	static const uint32_t cls[3] = {1, 1, 1};
	static const float prob[3] = {0.9f, 0.9f, 0.9f};
	static char *labels[2] = {"background", "dog"};
	cmr_wordvec wv;
	CHECK(wv_parse(&wv, "dog 1 0\ncat 0 1\n") == 0);
	cmr_knowledge_pool pool = {x, 3, 2, cls, prob, labels, 2};
	cmr_knowledge kn;
	char err[256];
	CHECK(cmr_knowledge_build(&kn, &pool, &wv, NULL, 0.5f, 1, 1, err, sizeof err) == -1);
	CHECK(strstr(err, "every concept's prototype is the pool's centre (all 3 images in one concept)") != NULL);
	/* without a centre it is a concept */
	CHECK(cmr_knowledge_build(&kn, &pool, &wv, NULL, 0.5f, 1, 0, err, sizeof err) == 0 && kn.k == 1);
	cmr_knowledge_free(&kn);
	cmr_wordvec_free(&wv);
}

static void tmp_path(char *p, size_t n, const char *tag)
{
	snprintf(p, n, "/tmp/cmr-test-knowledge-%d-%s.safetensors", (int)getpid(), tag);
}

static int same(const float *a, const float *b, size_t n)
{
	return memcmp(a, b, n * sizeof *a) == 0;
}

TEST(knowledge_file_round_trips)
{
	cmr_knowledge kn, back;
	char err[4400], path[256];
	int rc;
	make_pool(&kn, 1, 1, 0.5f, err, sizeof err, &rc);
	CHECK(rc == 0);
	snprintf(kn.features, sizeof kn.features, "mobilenet.tflite");
	kn.features_id = 0x0123456789abcdefULL;
	kn.provenance = strdup("{\"tool\":\"test\"}");
	tmp_path(path, sizeof path, "rt");
	for (int mapped = 0; mapped < 2; mapped++) {
		if (mapped) {
			cmr_map_hp hp;
			cmr_map_hp_default(&hp);
			hp.steps = 3;
			CHECK(cmr_knowledge_train_map(&kn, &hp, NULL, NULL, err, sizeof err) == 0);
			kn.map_provenance = strdup("{\"steps\":3}");
		}
		CHECK(cmr_knowledge_save(&kn, path, err, sizeof err) == 0);
		CHECK(cmr_knowledge_load(&back, path, err, sizeof err) == 0);
		CHECK(back.k == kn.k && back.dv == kn.dv && back.dw == kn.dw && back.words.dim == kn.dw);
		for (size_t c = 0; c < kn.k; c++)
			CHECK(strcmp(back.words.word[c], kn.words.word[c]) == 0 && back.count[c] == kn.count[c]);
		CHECK(same(back.proto, kn.proto, kn.k * 4) && same(back.words.vec, kn.words.vec, kn.k * 3) &&
		      same(back.centre, kn.centre, 4));
		CHECK(strcmp(back.features, "mobilenet.tflite") == 0 && back.features_id == kn.features_id);
		CHECK(back.provenance && strcmp(back.provenance, kn.provenance) == 0);
		CHECK(!mapped == !back.map_w);
		if (mapped)
			CHECK(same(back.map_w, kn.map_w, 3 * 4) && same(back.map_b, kn.map_b, 3) &&
			      strcmp(back.map_provenance, "{\"steps\":3}") == 0);
		/* the words are a word-vector table */
		CHECK(cmr_wordvec_find(&back.words, "dog") == back.words.vec + 2 * 3);
		cmr_knowledge_free(&back);
	}
	unlink(path);
	cmr_knowledge_free(&kn);
}

/* writes a file with one thing changed and expects the loader's message */
static int refused(const char *meta, const float *proto, const int32_t *counts, int with_centre, const char *msg)
{
	static const float wv[2 * 2] = {1, 0, 0, 1}, centre[3] = {0, 0, 0};
	cmr_st_out t[4] = {
		{"word_vectors", CMR_DTYPE_F32, 2, {2, 2}, wv},
		{"prototypes", CMR_DTYPE_F32, 2, {2, 3}, proto},
		{"counts", CMR_DTYPE_I32, 1, {2}, counts},
		{"centre", CMR_DTYPE_F32, 1, {3}, centre},
	};
	char path[256], err[4400] = "";
	tmp_path(path, sizeof path, "bad");
	if (cmr_st_write(path, t, with_centre ? 4 : 3, meta, err, sizeof err) < 0)
		return 0;
	cmr_knowledge kn;
	int rc = cmr_knowledge_load(&kn, path, err, sizeof err);
	unlink(path);
	if (rc == 0) {
		cmr_knowledge_free(&kn);
		return strcmp(msg, "") == 0;
	}
	if (!strstr(err, msg))
		fprintf(stderr, "got '%s', expected '%s'\n", err, msg);
	return *msg && strstr(err, msg) != NULL;
}

TEST(knowledge_file_refusals)
{
	static const float good[6] = {1, 0, 0, 0, 0.6f, 0.8f}, longp[6] = {1, 0, 0, 0, 0.6f, 0.9f};
	static const float nan_p[6] = {1, 0, 0, 0, NAN, 0.8f};
	static const int32_t cnt[2] = {3, 1}, zero[2] = {3, 0};
	const char *ok = "{\"format\":\"cmr-knowledge-1\",\"words\":\"cat\\ndog\",\"features_model\":\"m\","
			 "\"features_xxh3\":\"0123456789abcdef\"}";
	CHECK(refused(ok, good, cnt, 1, ""));
	CHECK(refused("{\"format\":\"cmr-knowledge-2\"}", good, cnt, 1, "format 'cmr-knowledge-2' is not cmr-knowledge-1"));
	CHECK(refused("{}", good, cnt, 1, "not a knowledge file"));
	CHECK(refused("{\"format\":\"cmr-knowledge-1\",\"words\":\"dog\\ncat\",\"features_model\":\"m\","
		      "\"features_xxh3\":\"0123456789abcdef\"}", good, cnt, 1, "not sorted and unique ('dog' then 'cat')"));
	CHECK(refused("{\"format\":\"cmr-knowledge-1\",\"words\":\"cat\",\"features_model\":\"m\","
		      "\"features_xxh3\":\"0123456789abcdef\"}", good, cnt, 1, "1 words for 2 prototypes"));
	CHECK(refused("{\"format\":\"cmr-knowledge-1\",\"words\":\"cat\\nd g\",\"features_model\":\"m\","
		      "\"features_xxh3\":\"0123456789abcdef\"}", good, cnt, 1, "word 2 is empty, too long or has a space"));
	CHECK(refused("{\"format\":\"cmr-knowledge-1\",\"words\":\"cat\\ndog\",\"features_model\":\"m\","
		      "\"features_xxh3\":\"xyz\"}", good, cnt, 1, "features_xxh3 (16 hex digits)"));
	CHECK(refused(ok, longp, cnt, 1, "the prototype of 'dog' is not of unit length"));
	CHECK(refused(ok, nan_p, cnt, 1, "tensor 'prototypes' has a value that is not finite (element 4)"));
	CHECK(refused(ok, good, zero, 1, "the count of 'dog' is 0"));
	CHECK(refused(ok, good, cnt, 0, "no tensor 'centre'"));
}

TEST(knowledge_ood_bridges_to_the_nearest_concepts)
{
	/* hand-made: dog, cat, car along the axes; prototypes distinct unit vectors */
	cmr_knowledge kn = {0};
	kn.k = 3, kn.dv = 2, kn.dw = 3;
	CHECK(wv_parse(&kn.words, "car 0 0 1\ncat 0 1 0\ndog 1 0 0\n") == 0);
	float proto[6] = {1, 0, 0, 1, 0.6f, 0.8f}; /* car, cat, dog */
	kn.proto = proto;
	float out[2];
	size_t near;
	char how;
	/* a concept is itself */
	CHECK(cmr_knowledge_word(&kn, "cat", NULL, 10, 0.1f, 0.5f, out, &near, &how) == 1 && how == 'c' && near == 1 &&
	      out[0] == 0 && out[1] == 1);
	/* puppy: nearest dog (cos .95), then cat (.32); m 1 gives dog's prototype exactly */
	float puppy[3] = {0.9f, 0.3f, 0};
	CHECK(cmr_knowledge_word(&kn, "puppy", puppy, 1, 0.1f, 0.5f, out, &near, &how) == 1 && how == 'o' && near == 2 &&
	      out[0] == 0.6f && out[1] == 0.8f);
	/* m 2: softmax(cos / tau) over dog and cat, the weighted prototypes made unit */
	CHECK(cmr_knowledge_word(&kn, "puppy", puppy, 2, 0.5f, 0.5f, out, &near, &how) == 1 && how == 'o');
	double n = sqrt(0.81 + 0.09), cd = 0.9 / n, cc = 0.3 / n;
	double wd = 1 / (1 + exp((cc - cd) / 0.5)), wc = 1 - wd;
	double ex = wd * 0.6, ey = wd * 0.8 + wc * 1, en = sqrt(ex * ex + ey * ey);
	CHECK(fabs(out[0] - ex / en) < 1e-6 && fabs(out[1] - ey / en) < 1e-6);
	/* below the cosine floor, or no vector, or m 0: no prototype */
	CHECK(cmr_knowledge_word(&kn, "puppy", puppy, 2, 0.5f, 0.96f, out, &near, &how) == 0 && how == '-');
	CHECK(cmr_knowledge_word(&kn, "puppy", NULL, 2, 0.5f, 0.5f, out, &near, &how) == 0);
	CHECK(cmr_knowledge_word(&kn, "puppy", puppy, 0, 0.5f, 0.5f, out, &near, &how) == 0);
	kn.proto = NULL;
	cmr_knowledge_free(&kn);
}

static uint64_t fd_s = 7;
static float fd_rnd(void)
{
	fd_s = fd_s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(fd_s >> 11) / 9007199254740992.0 * 2 - 1);
}

TEST(knowledge_map_gradients_match_finite_differences)
{
	enum { K = 6, DV = 7, DW = 4 };
	float W[DW * DV], b[DW], P[K * DV], Wv[K * DW], gw[DW * DV], gb[DW];
	for (int i = 0; i < DW * DV; i++)
		W[i] = fd_rnd() * 0.5f;
	for (int i = 0; i < DW; i++)
		b[i] = fd_rnd() * 0.1f;
	for (int i = 0; i < K * DV; i++)
		P[i] = fd_rnd();
	for (int i = 0; i < K * DW; i++)
		Wv[i] = fd_rnd();
	cmr_unit_rows(P, K, DV);
	cmr_unit_rows(Wv, K, DW);
	cmr_map_hp hp;
	cmr_map_hp_default(&hp);
	hp.tau = 0.3f, hp.w_sim = 0.7f, hp.w_con = 1.3f;
	double parts[3];
	double L = cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, gw, gb, parts);
	CHECK(L > 0 && fabs(L - parts[0] - parts[1] - parts[2]) < 1e-12);
	double worst = 0;
	const float h = 1e-3f;
	for (int i = 0; i < DW * DV + DW; i++) {
		float *p = i < DW * DV ? W + i : b + (i - DW * DV), keep = *p;
		*p = keep + h;
		double lp = cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, NULL, NULL, NULL);
		*p = keep - h;
		double lm = cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, NULL, NULL, NULL);
		*p = keep;
		double fd = (lp - lm) / ((double)(keep + h) - (double)(keep - h));
		double an = i < DW * DV ? gw[i] : gb[i - DW * DV];
		double e = fabs(fd - an) / (fabs(fd) + fabs(an) + 1e-3);
		worst = e > worst ? e : worst;
	}
	if (getenv("CMR_TEST_VERBOSE"))
		fprintf(stderr, "mapping loss %.6f: worst relative gradient error %g\n", L, worst);
	CHECK(worst < 3e-5); /* measured 9.8e-6 (central differences, h 1e-3) */
	/* each term alone too: only consistency */
	hp.w_sim = 0, hp.w_con = 0;
	cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, gw, gb, parts);
	CHECK(parts[1] == 0 && parts[2] == 0);
	float keep = W[5];
	W[5] = keep + h;
	double lp = cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, NULL, NULL, NULL);
	W[5] = keep - h;
	double lm = cmr_map_loss(W, b, P, Wv, K, DV, DW, &hp, NULL, NULL, NULL);
	W[5] = keep;
	double fd = (lp - lm) / ((double)(keep + h) - (double)(keep - h));
	CHECK(fabs(fd - gw[5]) / (fabs(fd) + fabs(gw[5]) + 1e-3) < 1e-4);
}

TEST(knowledge_map_training_aligns_prototypes_with_words)
{
	cmr_knowledge kn;
	char err[256];
	int rc;
	make_pool(&kn, 0, 1, 0.5f, err, sizeof err, &rc);
	CHECK(rc == 0 && kn.k == 4);
	cmr_map_hp hp;
	cmr_map_hp_default(&hp);
	hp.steps = 1;
	CHECK(cmr_knowledge_train_map(&kn, &hp, NULL, NULL, err, sizeof err) == 0);
	double first = cmr_map_loss(kn.map_w, kn.map_b, kn.proto, kn.words.vec, kn.k, kn.dv, kn.dw, &hp, NULL, NULL, NULL);
	hp.steps = 400, hp.lr = 0.01f;
	CHECK(cmr_knowledge_train_map(&kn, &hp, NULL, NULL, err, sizeof err) == 0);
	double last = cmr_map_loss(kn.map_w, kn.map_b, kn.proto, kn.words.vec, kn.k, kn.dv, kn.dw, &hp, NULL, NULL, NULL);
	CHECK(last < 0.5 * first);
	/* each prototype, mapped, is nearest its own word */
	for (size_t c = 0; c < kn.k; c++) {
		float x[4], u[3];
		memcpy(x, kn.proto + c * 4, sizeof x);
		CHECK(cmr_knowledge_mapped(&kn, x, u) == 0);
		size_t best = 0;
		double bs = -2;
		for (size_t e = 0; e < kn.k; e++) {
			double s = 0;
			for (int j = 0; j < 3; j++)
				s += (double)u[j] * kn.words.vec[e * 3 + j];
			if (s > bs)
				bs = s, best = e;
		}
		/* car and sports have one prototype (the same images): either word will do */
		CHECK(best == c || memcmp(kn.proto + best * 4, kn.proto + c * 4, 4 * sizeof(float)) == 0);
	}
	cmr_knowledge_free(&kn);
}
