package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// kvaluesIQ4NL is ggml's non-linear 4-bit codebook of IQ4_NL and IQ4_XS.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

func f16at(b []byte) float32 { return F16ToF32(binary.LittleEndian.Uint16(b)) }

// CanDequantize reports whether Dequantize supports t.
func CanDequantize(t Type) bool { _, ok := dequantizers[t]; return ok }

type dequantFunc func(src []byte, dst []float32)

var dequantizers = map[Type]dequantFunc{
	F32:    dequantF32,
	F16:    dequantF16,
	BF16:   dequantBF16,
	Q4_0:   dequantQ4_0,
	Q4_1:   dequantQ4_1,
	Q5_0:   dequantQ5_0,
	Q5_1:   dequantQ5_1,
	Q8_0:   dequantQ8_0,
	Q8_1:   dequantQ8_1,
	Q2_K:   dequantQ2K,
	Q3_K:   dequantQ3K,
	Q4_K:   dequantQ4K,
	Q5_K:   dequantQ5K,
	Q6_K:   dequantQ6K,
	Q8_K:   dequantQ8K,
	IQ4_NL: dequantIQ4NL,
	IQ4_XS: dequantIQ4XS,
	// dequant_iq.go
	IQ2_XXS: dequantIQ2XXS,
	IQ2_XS:  dequantIQ2XS,
	IQ2_S:   dequantIQ2S,
	IQ3_XXS: dequantIQ3XXS,
	IQ3_S:   dequantIQ3S,
	IQ1_S:   dequantIQ1S,
	IQ1_M:   dequantIQ1M,
	TQ1_0:   dequantTQ1_0,
	TQ2_0:   dequantTQ2_0,
	MXFP4:   dequantMXFP4,
}

// Dequantize converts len(dst) elements of type t stored in src to float32,
// with exactly ggml's scalar arithmetic (results are bit-identical to
// ggml's to_float). len(dst) must be a multiple of t's block size and src
// must hold exactly the bytes of len(dst) elements.
func Dequantize(t Type, src []byte, dst []float32) error {
	fn, ok := dequantizers[t]
	if !ok {
		if !t.Known() {
			return fmt.Errorf("%w: %d", ErrUnknownType, uint32(t))
		}
		return fmt.Errorf("%w: dequantize %s", ErrUnsupported, t)
	}
	need, err := t.RowBytes(len(dst))
	if err != nil {
		return err
	}
	if len(src) != need {
		return fmt.Errorf("%w: %d %s elements need %d bytes, got %d", ErrSize, len(dst), t, need, len(src))
	}
	fn(src, dst)
	return nil
}

func dequantF32(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(src []byte, dst []float32) {
	tab := f16Table()
	for i := range dst {
		dst[i] = tab[le16(src[2*i:])]
	}
}

func dequantBF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = BF16ToF32(le16(src[2*i:]))
	}
}

func dequantQ4_0(src []byte, dst []float32) {
	const bs = 18
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		qs := b[2:18]
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < 16; j++ {
			y[j] = float32(int32(qs[j]&0xf)-8) * d
			y[j+16] = float32(int32(qs[j]>>4)-8) * d
		}
	}
}

func dequantQ4_1(src []byte, dst []float32) {
	const bs = 20
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d, m := f16at(b), f16at(b[2:])
		qs := b[4:20]
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < 16; j++ {
			y[j] = float32(float32(qs[j]&0xf)*d) + m
			y[j+16] = float32(float32(qs[j]>>4)*d) + m
		}
	}
}

func dequantQ5_0(src []byte, dst []float32) {
	const bs = 22
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		qh := binary.LittleEndian.Uint32(b[2:])
		qs := b[6:22]
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < 16; j++ {
			h0 := byte((qh>>uint(j))<<4) & 0x10
			h1 := byte(qh>>uint(j+12)) & 0x10
			y[j] = float32(int32(qs[j]&0xf|h0)-16) * d
			y[j+16] = float32(int32(qs[j]>>4|h1)-16) * d
		}
	}
}

func dequantQ5_1(src []byte, dst []float32) {
	const bs = 24
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d, m := f16at(b), f16at(b[2:])
		qh := binary.LittleEndian.Uint32(b[4:])
		qs := b[8:24]
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < 16; j++ {
			h0 := byte((qh>>uint(j))<<4) & 0x10
			h1 := byte(qh>>uint(j+12)) & 0x10
			y[j] = float32(float32(qs[j]&0xf|h0)*d) + m
			y[j+16] = float32(float32(qs[j]>>4|h1)*d) + m
		}
	}
}

func dequantQ8_0(src []byte, dst []float32) {
	const bs = 34
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		y := dst[i*QK : (i+1)*QK]
		for j, q := range b[2:34] {
			y[j] = float32(int8(q)) * d
		}
	}
}

func dequantQ8_1(src []byte, dst []float32) {
	const bs = 36
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		y := dst[i*QK : (i+1)*QK]
		for j, q := range b[4:36] {
			y[j] = float32(int8(q)) * d
		}
	}
}

func dequantQ8K(src []byte, dst []float32) {
	const bs = 292
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := math.Float32frombits(binary.LittleEndian.Uint32(b))
		y := dst[i*QKK : (i+1)*QKK]
		for j, q := range b[4 : 4+QKK] {
			y[j] = d * float32(int8(q))
		}
	}
}

// Q2_K block: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
func dequantQ2K(src []byte, dst []float32) {
	const bs = 84
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		scales := b[0:16]
		q := b[16:80]
		d, min := f16at(b[80:]), f16at(b[82:])
		y := dst[i*QKK : (i+1)*QKK]
		is, o := 0, 0
		for n := 0; n < QKK; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					sc := scales[is]
					is++
					dl := d * float32(sc&0xf)
					ml := min * float32(sc>>4)
					qq := q[16*half : 16*half+16]
					for l := 0; l < 16; l++ {
						y[o] = float32(dl*float32((qq[l]>>shift)&3)) - ml
						o++
					}
				}
				shift += 2
			}
			q = q[32:]
		}
	}
}

// q3kScales unpacks Q3_K's 12 bytes of 6-bit scales into 16 signed scales (still offset by 32).
func q3kScales(s []byte, out *[16]int8) {
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	a0 := binary.LittleEndian.Uint32(s[0:])
	a1 := binary.LittleEndian.Uint32(s[4:])
	tmp := binary.LittleEndian.Uint32(s[8:])
	aux := [4]uint32{
		(a0 & kmask2) | (((tmp >> 0) & kmask1) << 4),
		(a1 & kmask2) | (((tmp >> 2) & kmask1) << 4),
		((a0 >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4),
		((a1 >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4),
	}
	for k := 0; k < 4; k++ {
		for j := 0; j < 4; j++ {
			out[4*k+j] = int8(aux[k] >> (8 * j))
		}
	}
}

// Q3_K block: hmask[32], qs[64], scales[12], d.
func dequantQ3K(src []byte, dst []float32) {
	const bs = 110
	var scales [16]int8
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		hm := b[0:32]
		q := b[32:96]
		q3kScales(b[96:108], &scales)
		dAll := f16at(b[108:])
		y := dst[i*QKK : (i+1)*QKK]
		is, o := 0, 0
		m := byte(1)
		for n := 0; n < QKK; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					dl := dAll * float32(int32(scales[is])-32)
					is++
					for l := 16 * half; l < 16*half+16; l++ {
						v := int32((q[l] >> shift) & 3)
						if hm[l]&m == 0 {
							v -= 4
						}
						y[o] = dl * float32(v)
						o++
					}
				}
				shift += 2
				m <<= 1
			}
			q = q[32:]
		}
	}
}

// scaleMinK4 unpacks scale and min j of the 12-byte 6-bit packing used by Q4_K and Q5_K.
func scaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xf) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

// Q4_K block: d, dmin, scales[12], qs[128].
func dequantQ4K(src []byte, dst []float32) {
	const bs = 144
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d, min := f16at(b), f16at(b[2:])
		sc := b[4:16]
		q := b[16:144]
		y := dst[i*QKK : (i+1)*QKK]
		for j, is := 0, 0; j < QKK; j, is = j+64, is+2 {
			s1, m1 := scaleMinK4(is, sc)
			s2, m2 := scaleMinK4(is+1, sc)
			d1, mm1 := d*float32(s1), min*float32(m1)
			d2, mm2 := d*float32(s2), min*float32(m2)
			for l := 0; l < 32; l++ {
				y[j+l] = float32(d1*float32(q[l]&0xf)) - mm1
				y[j+32+l] = float32(d2*float32(q[l]>>4)) - mm2
			}
			q = q[32:]
		}
	}
}

// Q5_K block: d, dmin, scales[12], qh[32], qs[128].
func dequantQ5K(src []byte, dst []float32) {
	const bs = 176
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d, min := f16at(b), f16at(b[2:])
		sc := b[4:16]
		qh := b[16:48]
		ql := b[48:176]
		y := dst[i*QKK : (i+1)*QKK]
		u1, u2 := byte(1), byte(2)
		for j, is := 0, 0; j < QKK; j, is = j+64, is+2 {
			s1, m1 := scaleMinK4(is, sc)
			s2, m2 := scaleMinK4(is+1, sc)
			d1, mm1 := d*float32(s1), min*float32(m1)
			d2, mm2 := d*float32(s2), min*float32(m2)
			for l := 0; l < 32; l++ {
				v1 := ql[l] & 0xf
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				v2 := ql[l] >> 4
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				y[j+l] = float32(d1*float32(v1)) - mm1
				y[j+32+l] = float32(d2*float32(v2)) - mm2
			}
			ql = ql[32:]
			u1 <<= 2
			u2 <<= 2
		}
	}
}

// Q6_K block: ql[128], qh[64], scales[16] (int8), d.
func dequantQ6K(src []byte, dst []float32) {
	const bs = 210
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		ql := b[0:128]
		qh := b[128:192]
		sc := b[192:208]
		d := f16at(b[208:])
		y := dst[i*QKK : (i+1)*QKK]
		for n := 0; n < QKK; n += 128 {
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int32(ql[l]&0xf|((qh[l]>>0)&3)<<4) - 32
				q2 := int32(ql[l+32]&0xf|((qh[l]>>2)&3)<<4) - 32
				q3 := int32(ql[l]>>4|((qh[l]>>4)&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|((qh[l]>>6)&3)<<4) - 32
				y[n+l] = d * float32(int8(sc[is])) * float32(q1)
				y[n+l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				y[n+l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				y[n+l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
			ql = ql[64:]
			qh = qh[32:]
			sc = sc[8:]
		}
	}
}

func dequantIQ4NL(src []byte, dst []float32) {
	const bs = 18
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		qs := b[2:18]
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < 16; j++ {
			y[j] = d * float32(kvaluesIQ4NL[qs[j]&0xf])
			y[j+16] = d * float32(kvaluesIQ4NL[qs[j]>>4])
		}
	}
}

// IQ4_XS block: d, scales_h (uint16), scales_l[4], qs[128].
func dequantIQ4XS(src []byte, dst []float32) {
	const bs = 136
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := f16at(b)
		sh := le16(b[2:])
		sl := b[4:8]
		qs := b[8:136]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			ls := int32((sl[ib/2]>>(4*(ib%2)))&0xf) | int32((sh>>(2*ib))&3)<<4
			dl := d * float32(ls-32)
			for j := 0; j < 16; j++ {
				y[32*ib+j] = dl * float32(kvaluesIQ4NL[qs[j]&0xf])
				y[32*ib+j+16] = dl * float32(kvaluesIQ4NL[qs[j]>>4])
			}
			qs = qs[16:]
		}
	}
}
