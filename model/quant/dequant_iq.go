package quant

import "math"

// Dequantisers of the i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S,
// IQ3_XXS, IQ3_S), the ternary types (TQ1_0, TQ2_0) and MXFP4: the block
// layouts and arithmetic of ggml's dequantize_row_* (each product rounded
// to float32 in ggml's order, so the results are ggml's bit for bit; the
// references in testdata/quant-ref-more.gguf were made with ggml's
// to_float).

// iq1Delta is IQ1S_DELTA (and IQ1M_DELTA): the offset of the IQ1 grids.
const iq1Delta = 0.125

// signBit reports whether bit j of a sign byte is set: the value is negative.
func signBit(signs byte, j int) bool { return signs&(1<<j) != 0 }

// ksign expands the 7 stored sign bits of 8 values to the byte ggml's
// ksigns_iq2xs holds: the 8th bit makes the count of negatives even.
func ksign(v uint32) byte {
	b := byte(v & 127)
	if parity(b) {
		b |= 128
	}
	return b
}

func parity(b byte) bool {
	b ^= b >> 4
	b ^= b >> 2
	b ^= b >> 1
	return b&1 == 1
}

// gridByte is byte j of a grid entry.
func gridByte(g uint64, j int) float32 { return float32(byte(g >> (8 * j))) }

// signed is v, negated when neg.
func signed(v float32, neg bool) float32 {
	if neg {
		return -v
	}
	return v
}

func dequantIQ2XXS(src []byte, dst []float32) {
	const bs = 2 + QKK/4
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			q := b[2+8*ib : 2+8*ib+8]
			aux1 := le32(q[4:])
			db := float32(d*(0.5+float32(aux1>>28))) * 0.25
			for l := 0; l < 4; l++ {
				g := iq2xxsGrid[q[l]]
				signs := ksign(aux1 >> (7 * l))
				for j := 0; j < 8; j++ {
					y[32*ib+8*l+j] = signed(db*gridByte(g, j), signBit(signs, j))
				}
			}
		}
	}
}

func dequantIQ2XS(src []byte, dst []float32) {
	const bs = 2 + QKK/4 + QKK/32
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		qs, scales := b[2:2+QKK/4], b[2+QKK/4:]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			db := [2]float32{
				float32(d*(0.5+float32(scales[ib]&0xf))) * 0.25,
				float32(d*(0.5+float32(scales[ib]>>4))) * 0.25,
			}
			for l := 0; l < 4; l++ {
				v := le16(qs[2*(4*ib+l):])
				g := iq2xsGrid[v&511]
				signs := ksign(uint32(v >> 9))
				for j := 0; j < 8; j++ {
					y[32*ib+8*l+j] = signed(db[l/2]*gridByte(g, j), signBit(signs, j))
				}
			}
		}
	}
}

func dequantIQ2S(src []byte, dst []float32) {
	const bs = 2 + QKK/4 + QKK/32 + QKK/32
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		qs, signs := b[2:2+QKK/8], b[2+QKK/8:2+QKK/4]
		qh, scales := b[2+QKK/4:2+QKK/4+QKK/32], b[2+QKK/4+QKK/32:]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			db := [2]float32{
				float32(d*(0.5+float32(scales[ib]&0xf))) * 0.25,
				float32(d*(0.5+float32(scales[ib]>>4))) * 0.25,
			}
			for l := 0; l < 4; l++ {
				g := iq2sGrid[int(qs[4*ib+l])|int(uint32(qh[ib])<<(8-2*l)&0x300)]
				for j := 0; j < 8; j++ {
					y[32*ib+8*l+j] = signed(db[l/2]*gridByte(g, j), signBit(signs[4*ib+l], j))
				}
			}
		}
	}
}

func dequantIQ3XXS(src []byte, dst []float32) {
	const bs = 2 + 3*QKK/8
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		qs, ss := b[2:2+QKK/4], b[2+QKK/4:]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			aux := le32(ss[4*ib:])
			db := float32(d*(0.5+float32(aux>>28))) * 0.5
			for l := 0; l < 4; l++ {
				signs := ksign(aux >> (7 * l))
				g1, g2 := uint64(iq3xxsGrid[qs[8*ib+2*l]]), uint64(iq3xxsGrid[qs[8*ib+2*l+1]])
				for j := 0; j < 4; j++ {
					y[32*ib+8*l+j] = signed(db*gridByte(g1, j), signBit(signs, j))
					y[32*ib+8*l+j+4] = signed(db*gridByte(g2, j), signBit(signs, j+4))
				}
			}
		}
	}
}

func dequantIQ3S(src []byte, dst []float32) {
	const bs = 2 + QKK/4 + QKK/32 + QKK/8 + QKK/64
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		qs := b[2 : 2+QKK/4]
		qh := b[2+QKK/4 : 2+QKK/4+QKK/32]
		signs := b[2+QKK/4+QKK/32 : 2+QKK/4+QKK/32+QKK/8]
		scales := b[2+QKK/4+QKK/32+QKK/8:]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib += 2 {
			db := [2]float32{
				d * float32(1+2*int(scales[ib/2]&0xf)),
				d * float32(1+2*int(scales[ib/2]>>4)),
			}
			for half := 0; half < 2; half++ {
				h := uint32(qh[ib+half])
				q := qs[8*(ib+half):]
				sg := signs[4*(ib+half):]
				for l := 0; l < 4; l++ {
					g1 := uint64(iq3sGrid[uint32(q[2*l])|(h<<(8-2*l))&256])
					g2 := uint64(iq3sGrid[uint32(q[2*l+1])|(h<<(7-2*l))&256])
					o := 32*(ib+half) + 8*l
					for j := 0; j < 4; j++ {
						y[o+j] = signed(db[half]*gridByte(g1, j), signBit(sg[l], j))
						y[o+j+4] = signed(db[half]*gridByte(g2, j), signBit(sg[l], j+4))
					}
				}
			}
		}
	}
}

// iq1Value is byte j of an IQ1 grid entry, an int8 in {-1, 0, 1}.
func iq1Value(g uint64, j int) float32 { return float32(int8(byte(g >> (8 * j)))) }

func dequantIQ1S(src []byte, dst []float32) {
	const bs = 2 + QKK/8 + QKK/16
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b))
		qs, qhb := b[2:2+QKK/8], b[2+QKK/8:]
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			qh := le16(qhb[2*ib:])
			dl := d * float32(2*((qh>>12)&7)+1)
			delta := float32(iq1Delta)
			if qh&0x8000 != 0 {
				delta = -iq1Delta
			}
			for l := 0; l < 4; l++ {
				g := iq1sGrid[int(qs[4*ib+l])|int((qh>>(3*l))&7)<<8]
				for j := 0; j < 8; j++ {
					y[32*ib+8*l+j] = dl * (iq1Value(g, j) + delta)
				}
			}
		}
	}
}

func dequantIQ1M(src []byte, dst []float32) {
	const bs = QKK/8 + QKK/16 + QKK/32
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		qs, qh, scb := b[:QKK/8], b[QKK/8:QKK/8+QKK/16], b[QKK/8+QKK/16:]
		var sc [4]uint16
		for k := range sc {
			sc[k] = le16(scb[2*k:])
		}
		d := F16ToF32((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000))
		y := dst[i*QKK : (i+1)*QKK]
		for ib := 0; ib < QKK/32; ib++ {
			s := sc[ib/2] >> (6 * (ib % 2))
			dl := [2]float32{d * float32(2*(s&7)+1), d * float32(2*((s>>3)&7)+1)}
			h0, h1 := uint16(qh[2*ib]), uint16(qh[2*ib+1])
			q := qs[4*ib:]
			idx := [4]uint16{
				uint16(q[0]) | (h0<<8)&0x700, uint16(q[1]) | (h0<<4)&0x700,
				uint16(q[2]) | (h1<<8)&0x700, uint16(q[3]) | (h1<<4)&0x700,
			}
			hbits := [4]bool{h0&0x08 != 0, h0&0x80 != 0, h1&0x08 != 0, h1&0x80 != 0}
			for l := 0; l < 4; l++ {
				delta := float32(iq1Delta)
				if hbits[l] {
					delta = -iq1Delta
				}
				g := iq1sGrid[idx[l]]
				for j := 0; j < 8; j++ {
					y[32*ib+8*l+j] = dl[l/2] * (iq1Value(g, j) + delta)
				}
			}
		}
	}
}

// TQ1_0 packs five ternary digits per byte (base 3, read back by
// multiplying by 3^n and taking the top digit) and four in each of the
// last four bytes; d comes last in the block.
func dequantTQ1_0(src []byte, dst []float32) {
	const qsLen, qhLen = (QKK - 4*QKK/64) / 5, QKK / 64
	const bs = qsLen + qhLen + 2
	pow3 := [6]byte{1, 3, 9, 27, 81, 243}
	digit := func(q byte) float32 { return float32(int16((uint16(q)*3)>>8) - 1) }
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		qs, qh := b[:qsLen], b[qsLen:qsLen+qhLen]
		d := F16ToF32(le16(b[qsLen+qhLen:]))
		y := dst[i*QKK : (i+1)*QKK]
		k := 0
		full := qsLen - qsLen%32
		for j := 0; j < full; j += 32 {
			for n := 0; n < 5; n++ {
				for m := 0; m < 32; m++ {
					y[k] = digit(qs[j+m]*pow3[n]) * d
					k++
				}
			}
		}
		for j := full; j < qsLen; j += 16 {
			for n := 0; n < 5; n++ {
				for m := 0; m < 16; m++ {
					y[k] = digit(qs[j+m]*pow3[n]) * d
					k++
				}
			}
		}
		for n := 0; n < 4; n++ {
			for j := 0; j < qhLen; j++ {
				y[k] = digit(qh[j]*pow3[n]) * d
				k++
			}
		}
	}
}

// TQ2_0 holds four 2-bit values (0, 1, 2 for -1, 0, 1) per byte; d last.
func dequantTQ2_0(src []byte, dst []float32) {
	const bs = QKK/4 + 2
	for i := 0; i < len(dst)/QKK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := F16ToF32(le16(b[QKK/4:]))
		y := dst[i*QKK : (i+1)*QKK]
		k := 0
		for j := 0; j < QKK/4; j += 32 {
			for l := 0; l < 4; l++ {
				for m := 0; m < 32; m++ {
					y[k] = float32(int8((b[j+m]>>(2*l))&3)-1) * d
					k++
				}
			}
		}
	}
}

// kvaluesMXFP4 are the FP4 (E2M1) values of MXFP4, doubled (the block
// scale is halved to match): ggml's kvalues_mxfp4.
var kvaluesMXFP4 = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// e8m0Half is half of an E8M0 scale (2^(e-127) / 2), as ggml's
// ggml_e8m0_to_fp32_half computes it (subnormal for e < 2).
func e8m0Half(e byte) float32 {
	if e < 2 {
		return math.Float32frombits(0x00200000 << e)
	}
	return math.Float32frombits(uint32(e-1) << 23)
}

func dequantMXFP4(src []byte, dst []float32) {
	const bs = 1 + QK/2
	for i := 0; i < len(dst)/QK; i++ {
		b := src[i*bs : (i+1)*bs]
		d := e8m0Half(b[0])
		y := dst[i*QK : (i+1)*QK]
		for j := 0; j < QK/2; j++ {
			y[j] = float32(kvaluesMXFP4[b[1+j]&0x0f]) * d
			y[j+QK/2] = float32(kvaluesMXFP4[b[1+j]>>4]) * d
		}
	}
}
