package quant

import "math"

// F16ToF32 converts an IEEE 754 half-precision value to float32 exactly
// (every half value is representable in float32), like ggml's
// GGML_FP16_TO_FP32 including subnormals and infinities; NaNs keep their
// payload and become quiet.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f && mant == 0: // Inf
		return math.Float32frombits(sign | 0x7f800000)
	case exp == 0x1f: // NaN, made quiet as F16C and ggml's scalar path do
		return math.Float32frombits(sign | 0x7fc00000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default: // subnormal: mant * 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
}

// F32ToF16 converts float32 to half precision with round-to-nearest-even,
// the rounding of ggml's GGML_FP32_TO_FP16 (F16C or its scalar fallback).
// Values too large become ±Inf, NaN stays NaN (quiet).
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): value = m * 2^-24 with rounding.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e) // 24-bit significand down to 10-e bits
		half := uint32(1) << (shift - 1)
		r := m >> shift
		rem := m & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, up to Inf: correct
	}
	return sign | uint16(r)
}

// BF16ToF32 converts a bfloat16 value to float32 exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 converts float32 to bfloat16 like ggml's GGML_FP32_TO_BF16:
// round-to-nearest-even, NaNs forced quiet.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

// F16ToF32s converts min(len(dst), len(src)) halves to float32, exactly as
// F16ToF32 does (with F16C on amd64), for example to read an f16 KV cache.
func F16ToF32s(dst []float32, src []uint16) { f16ToF32sImpl(dst, src) }

// F32ToF16s converts min(len(dst), len(src)) floats to halves, exactly as
// F32ToF16 does (round-to-nearest-even; F16C on amd64).
func F32ToF16s(dst []uint16, src []float32) { f32ToF16sImpl(dst, src) }
