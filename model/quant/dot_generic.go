package quant

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"
)

// bytesToF32 reinterprets little-endian float32 data (GGUF data is
// little-endian, as are all supported hosts) without copying.
func bytesToF32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// BytesToF32 returns b (little-endian float32 data, for example an F32
// tensor of a mapped GGUF file) viewed as []float32 without copying.
// len(b) should be a multiple of 4; extra bytes are ignored. The result
// aliases b.
func BytesToF32(b []byte) []float32 { return bytesToF32(b) }

// DotF32 returns the dot product of a and b over min(len(a), len(b))
// elements, accumulated in float32 with several independent partial sums
// (so results can differ from a sequential sum in the last bits).
func DotF32(a, b []float32) float32 {
	return dotF32Impl(a, b)
}

func dotF32Generic(a, b []float32) float32 {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= n; i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < n; i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// f16Table maps every half to its float32 value, like ggml's
// ggml_table_f32_f16; built on first use (256 KiB) and read-only after.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = F16ToF32(uint16(i))
	}
	return t
})

func dotF16Generic(cols int, w, x []byte) float32 {
	tab := f16Table()
	w, x = w[:2*cols], x[:2*cols]
	var s0, s1 float32
	i := 0
	for ; i+4 <= 2*cols; i += 4 {
		s0 += tab[le16(w[i:])] * tab[le16(x[i:])]
		s1 += tab[le16(w[i+2:])] * tab[le16(x[i+2:])]
	}
	for ; i < 2*cols; i += 2 {
		s0 += tab[le16(w[i:])] * tab[le16(x[i:])]
	}
	return s0 + s1
}

func dotBF16Generic(cols int, w, x []byte) float32 {
	var s float64
	for i := 0; i < cols; i++ {
		s += float64(BF16ToF32(le16(w[2*i:])) * BF16ToF32(le16(x[2*i:])))
	}
	return float32(s)
}

func dotQ8_0Generic(cols int, w, x []byte) float32 {
	nb := cols / QK
	w, x = w[:nb*34], x[:nb*34]
	var sum float32
	for b := 0; b < nb; b++ {
		// Array pointers let the compiler drop the per-element bounds checks.
		wb := (*[34]byte)(w[b*34:])
		xb := (*[34]byte)(x[b*34:])
		var s0, s1, s2, s3 int32
		for j := 2; j < 34; j += 4 {
			s0 += int32(int8(wb[j])) * int32(int8(xb[j]))
			s1 += int32(int8(wb[j+1])) * int32(int8(xb[j+1]))
			s2 += int32(int8(wb[j+2])) * int32(int8(xb[j+2]))
			s3 += int32(int8(wb[j+3])) * int32(int8(xb[j+3]))
		}
		sum += float32((s0+s1)+(s2+s3)) * (f16at(wb[:]) * f16at(xb[:]))
	}
	return sum
}

func dotQ4_0Generic(cols int, w, x []byte) float32 {
	nb := cols / QK
	w, x = w[:nb*18], x[:nb*34]
	var sum float32
	for b := 0; b < nb; b++ {
		wb := (*[18]byte)(w[b*18:])
		xb := (*[34]byte)(x[b*34:])
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			s0 += (int32(wb[2+j]&0xf) - 8) * int32(int8(xb[2+j]))
			s1 += (int32(wb[2+j]>>4) - 8) * int32(int8(xb[18+j]))
		}
		sum += float32(s0+s1) * (f16at(wb[:]) * f16at(xb[:]))
	}
	return sum
}

func dotQ4_1Generic(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QK; b++ {
		wb := w[b*20 : b*20+20]
		xb := x[b*36 : b*36+36]
		q := xb[4:36]
		var s int32
		for j := 0; j < 16; j++ {
			s += int32(wb[4+j]&0xf) * int32(int8(q[j]))
			s += int32(wb[4+j]>>4) * int32(int8(q[j+16]))
		}
		sum += float32(s)*(f16at(wb)*f16at(xb)) + f16at(wb[2:])*f16at(xb[2:])
	}
	return sum
}

func dotQ5_0Generic(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QK; b++ {
		wb := w[b*22 : b*22+22]
		xb := x[b*34 : b*34+34]
		qh := binary.LittleEndian.Uint32(wb[2:])
		qs := wb[6:22]
		q := xb[2:34]
		var s int32
		for j := 0; j < 16; j++ {
			h0 := byte((qh>>uint(j))<<4) & 0x10
			h1 := byte(qh>>uint(j+12)) & 0x10
			s += (int32(qs[j]&0xf|h0) - 16) * int32(int8(q[j]))
			s += (int32(qs[j]>>4|h1) - 16) * int32(int8(q[j+16]))
		}
		sum += float32(s) * (f16at(wb) * f16at(xb))
	}
	return sum
}

func dotQ5_1Generic(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QK; b++ {
		wb := w[b*24 : b*24+24]
		xb := x[b*36 : b*36+36]
		qh := binary.LittleEndian.Uint32(wb[4:])
		qs := wb[8:24]
		q := xb[4:36]
		var s int32
		for j := 0; j < 16; j++ {
			h0 := byte((qh>>uint(j))<<4) & 0x10
			h1 := byte(qh>>uint(j+12)) & 0x10
			s += int32(qs[j]&0xf|h0) * int32(int8(q[j]))
			s += int32(qs[j]>>4|h1) * int32(int8(q[j+16]))
		}
		sum += float32(s)*(f16at(wb)*f16at(xb)) + f16at(wb[2:])*f16at(xb[2:])
	}
	return sum
}

func dotIQ4NLGeneric(cols int, w, x []byte) float32 {
	nb := cols / QK
	w, x = w[:nb*18], x[:nb*34]
	var sum float32
	for b := 0; b < nb; b++ {
		wb := (*[18]byte)(w[b*18:])
		xb := (*[34]byte)(x[b*34:])
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			s0 += int32(kvaluesIQ4NL[wb[2+j]&0xf]) * int32(int8(xb[2+j]))
			s1 += int32(kvaluesIQ4NL[wb[2+j]>>4]) * int32(int8(xb[18+j]))
		}
		sum += float32(s0+s1) * (f16at(wb[:]) * f16at(xb[:]))
	}
	return sum
}

// dotMXFP4Generic is ggml's vec_dot_mxfp4_q8_0: per block the E8M0 scale
// halved times the activations' f16 scale, times the integer sum of the
// levels (kvaluesMXFP4) and the activation bytes.
func dotMXFP4Generic(cols int, w, x []byte) float32 {
	nb := cols / QK
	w, x = w[:nb*17], x[:nb*34]
	var sum float32
	for b := 0; b < nb; b++ {
		wb := (*[17]byte)(w[b*17:])
		xb := (*[34]byte)(x[b*34:])
		var s0, s1 int32
		for j := 0; j < 16; j++ {
			s0 += int32(kvaluesMXFP4[wb[1+j]&0xf]) * int32(int8(xb[2+j]))
			s1 += int32(kvaluesMXFP4[wb[1+j]>>4]) * int32(int8(xb[18+j]))
		}
		sum += f16at(xb[:]) * e8m0Half(wb[0]) * float32(s0+s1)
	}
	return sum
}

// q8kD returns the float32 scale of a Q8_K block.
func q8kD(xb []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(xb)) }

func q8kBsum(xb []byte, j int) int32 { return int32(int16(le16(xb[4+QKK+2*j:]))) }

func dotQ2KGeneric(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QKK; b++ {
		wb := w[b*84 : b*84+84]
		xb := x[b*292 : b*292+292]
		sc := wb[0:16]
		q2 := wb[16:80]
		q8 := xb[4 : 4+QKK]
		var summs int32
		for j := 0; j < 16; j++ {
			summs += q8kBsum(xb, j) * int32(sc[j]>>4)
		}
		yd := q8kD(xb)
		dall := yd * f16at(wb[80:])
		dmin := yd * f16at(wb[82:])
		var isum int32
		is := 0
		for k := 0; k < 2; k++ {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				var s0, s1 int32
				for l := 0; l < 16; l++ {
					s0 += int32(int8(q8[l])) * int32((q2[l]>>shift)&3)
					s1 += int32(int8(q8[l+16])) * int32((q2[l+16]>>shift)&3)
				}
				isum += int32(sc[is]&0xf)*s0 + int32(sc[is+1]&0xf)*s1
				is += 2
				shift += 2
				q8 = q8[32:]
			}
			q2 = q2[32:]
		}
		sum += dall*float32(isum) - dmin*float32(summs)
	}
	return sum
}

func dotQ3KGeneric(cols int, w, x []byte) float32 {
	var sum float32
	var scales [16]int8
	for b := 0; b < cols/QKK; b++ {
		wb := w[b*110 : b*110+110]
		xb := x[b*292 : b*292+292]
		hm := wb[0:32]
		q3 := wb[32:96]
		q3kScales(wb[96:108], &scales)
		q8 := xb[4 : 4+QKK]
		var isum int32
		m := byte(1)
		sub := 0
		for k := 0; k < 2; k++ {
			for shift := uint(0); shift < 8; shift += 2 {
				for half := 0; half < 2; half++ {
					var s int32
					for l := 16 * half; l < 16*half+16; l++ {
						v := int32((q3[l] >> shift) & 3)
						if hm[l]&m == 0 {
							v -= 4
						}
						s += v * int32(int8(q8[l]))
					}
					isum += (int32(scales[sub]) - 32) * s
					sub++
				}
				q8 = q8[32:]
				m <<= 1
			}
			q3 = q3[32:]
		}
		sum += f16at(wb[108:]) * q8kD(xb) * float32(isum)
	}
	return sum
}

// k4Scales unpacks the 8 scales and 8 mins of Q4_K/Q5_K.
func k4Scales(s []byte) (sc, mn [8]uint8) {
	for j := 0; j < 8; j++ {
		sc[j], mn[j] = scaleMinK4(j, s)
	}
	return
}

func dotQ4KGeneric(cols int, w, x []byte) float32 {
	nb := cols / QKK
	w, x = w[:nb*144], x[:nb*292]
	var sum float32
	for b := 0; b < nb; b++ {
		wb := (*[144]byte)(w[b*144:])
		xb := (*[292]byte)(x[b*292:])
		sc, mn := k4Scales(wb[4:16])
		var summ int32
		for j := 0; j < 16; j++ {
			summ += q8kBsum(xb[:], j) * int32(mn[j/2])
		}
		var isum int32
		for j := 0; j < 4; j++ {
			q4 := (*[32]byte)(wb[16+32*j:])
			q8 := (*[64]byte)(xb[4+64*j:])
			var s0, s1, s2, s3 int32
			for l := 0; l < 32; l += 2 {
				s0 += int32(q4[l]&0xf) * int32(int8(q8[l]))
				s1 += int32(q4[l]>>4) * int32(int8(q8[l+32]))
				s2 += int32(q4[l+1]&0xf) * int32(int8(q8[l+1]))
				s3 += int32(q4[l+1]>>4) * int32(int8(q8[l+33]))
			}
			isum += int32(sc[2*j])*(s0+s2) + int32(sc[2*j+1])*(s1+s3)
		}
		yd := q8kD(xb[:])
		sum += f16at(wb[:])*yd*float32(isum) - f16at(wb[2:])*yd*float32(summ)
	}
	return sum
}

func dotQ5KGeneric(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QKK; b++ {
		wb := w[b*176 : b*176+176]
		xb := x[b*292 : b*292+292]
		sc, mn := k4Scales(wb[4:16])
		qh := wb[16:48]
		q4 := wb[48:176]
		q8 := xb[4 : 4+QKK]
		var summ int32
		for j := 0; j < 16; j++ {
			summ += q8kBsum(xb, j) * int32(mn[j/2])
		}
		var isum int32
		u1, u2 := byte(1), byte(2)
		for j := 0; j < 4; j++ {
			var s0, s1 int32
			for l := 0; l < 32; l++ {
				v0 := int32(q4[l] & 0xf)
				if qh[l]&u1 != 0 {
					v0 += 16
				}
				v1 := int32(q4[l] >> 4)
				if qh[l]&u2 != 0 {
					v1 += 16
				}
				s0 += v0 * int32(int8(q8[l]))
				s1 += v1 * int32(int8(q8[l+32]))
			}
			isum += int32(sc[2*j])*s0 + int32(sc[2*j+1])*s1
			q4 = q4[32:]
			q8 = q8[64:]
			u1 <<= 2
			u2 <<= 2
		}
		yd := q8kD(xb)
		sum += f16at(wb)*yd*float32(isum) - f16at(wb[2:])*yd*float32(summ)
	}
	return sum
}

func dotQ6KGeneric(cols int, w, x []byte) float32 {
	nb := cols / QKK
	w, x = w[:nb*210], x[:nb*292]
	var sum float32
	for b := 0; b < nb; b++ {
		wb := (*[210]byte)(w[b*210:])
		xb := (*[292]byte)(x[b*292:])
		var isum int32
		for n := 0; n < 2; n++ {
			ql := (*[64]byte)(wb[64*n:])
			qh := (*[32]byte)(wb[128+32*n:])
			sc := (*[8]byte)(wb[192+8*n:])
			q8 := (*[128]byte)(xb[4+128*n:])
			var s [8]int32
			for l := 0; l < 32; l++ {
				is := l / 16
				h := qh[l]
				q1 := int32(ql[l]&0xf|(h&3)<<4) - 32
				q2 := int32(ql[l+32]&0xf|((h>>2)&3)<<4) - 32
				q3 := int32(ql[l]>>4|((h>>4)&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|((h>>6)&3)<<4) - 32
				s[is+0] += q1 * int32(int8(q8[l]))
				s[is+2] += q2 * int32(int8(q8[l+32]))
				s[is+4] += q3 * int32(int8(q8[l+64]))
				s[is+6] += q4 * int32(int8(q8[l+96]))
			}
			for k := 0; k < 8; k++ {
				isum += int32(int8(sc[k])) * s[k]
			}
		}
		sum += f16at(wb[208:]) * q8kD(xb[:]) * float32(isum)
	}
	return sum
}

func dotIQ4XSGeneric(cols int, w, x []byte) float32 {
	var sum float32
	for b := 0; b < cols/QKK; b++ {
		wb := w[b*136 : b*136+136]
		xb := x[b*292 : b*292+292]
		sh := le16(wb[2:])
		sl := wb[4:8]
		qs := wb[8:136]
		q8 := xb[4 : 4+QKK]
		var isum int32
		for ib := 0; ib < 8; ib++ {
			ls := int32((sl[ib/2]>>(4*(ib%2)))&0xf) | int32((sh>>(2*ib))&3)<<4
			var s int32
			for j := 0; j < 16; j++ {
				s += int32(kvaluesIQ4NL[qs[j]&0xf]) * int32(int8(q8[j]))
				s += int32(kvaluesIQ4NL[qs[j]>>4]) * int32(int8(q8[j+16]))
			}
			isum += (ls - 32) * s
			qs = qs[16:]
			q8 = q8[32:]
		}
		sum += f16at(wb) * q8kD(xb) * float32(isum)
	}
	return sum
}

// checkBlocks returns the number of whole blocks of bs elements in cols and
// bounds-checks that w and x (wb and xb bytes per block) hold them, so the
// assembly kernels never read past a slice.
func checkBlocks(cols, bs int, w []byte, wb int, x []byte, xb int) int {
	nb := cols / bs
	if nb == 0 {
		return 0
	}
	_ = w[nb*wb-1]
	_ = x[nb*xb-1]
	return nb
}

// blockKernel adapts an assembly kernel over whole blocks to a dotFunc,
// bounds-checking the slices first.
func blockKernel(k func(nb int, w, x *byte) float32, bs, wb, xb int) dotFunc {
	return func(cols int, w, x []byte) float32 {
		if nb := checkBlocks(cols, bs, w, wb, x, xb); nb > 0 {
			return k(nb, unsafe.SliceData(w), unsafe.SliceData(x))
		}
		return 0
	}
}
