/* test_half.c - binary16 and bfloat16 conversions (lib/format/half.h). */
#include <math.h>

#include "format/half.h"
#include "unit.h"

TEST(half_every_f16_roundtrips)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = cmr_f16_to_f32((uint16_t)h);
		if (isnan(f)) {
			CHECK((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
			CHECK(isnan(cmr_f16_to_f32(cmr_f32_to_f16(f))));
			continue;
		}
		CHECK(cmr_f32_to_f16(f) == h);
	}
}

TEST(half_known_values_and_rounding)
{
	CHECK(cmr_f16_to_f32(0x3c00) == 1.0f);
	CHECK(cmr_f16_to_f32(0xc000) == -2.0f);
	CHECK(cmr_f16_to_f32(0x7bff) == 65504.0f);
	CHECK(cmr_f16_to_f32(0x0001) == 5.9604644775390625e-8f); /* smallest subnormal */
	CHECK(cmr_f32_to_f16(65520.0f) == 0x7c00);          /* rounds up to infinity */
	CHECK(cmr_f32_to_f16(65519.0f) == 0x7bff);
	CHECK(cmr_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie to even: down */
	CHECK(cmr_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02); /* tie to even: up */
	CHECK(cmr_f32_to_f16(2.98023224e-8f) == 0x0000);     /* half the smallest subnormal: to even */
	CHECK(cmr_f32_to_f16(2.98023224e-8f * 1.5f) == 0x0001);
	CHECK(cmr_f32_to_f16(-0.0f) == 0x8000);
	CHECK(cmr_f32_to_f16(INFINITY) == 0x7c00);
}

TEST(bf16_conversion)
{
	CHECK(cmr_bf16_to_f32(0x3f80) == 1.0f);
	CHECK(cmr_f32_to_bf16(1.0f) == 0x3f80);
	CHECK(cmr_f32_to_bf16(cmr_f32_from_bits(0x3f808000u)) == 0x3f80); /* tie to even: down */
	CHECK(cmr_f32_to_bf16(cmr_f32_from_bits(0x3f818000u)) == 0x3f82); /* tie to even: up */
	CHECK(cmr_f32_to_bf16(cmr_f32_from_bits(0x3f808001u)) == 0x3f81);
	CHECK(isnan(cmr_bf16_to_f32(cmr_f32_to_bf16(NAN))));
	for (uint32_t b = 0; b < 65536; b++) {
		float f = cmr_bf16_to_f32((uint16_t)b);
		if (!isnan(f))
			CHECK(cmr_f32_to_bf16(f) == b);
	}
}
