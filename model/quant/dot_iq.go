package quant

// Product kernels of the 2- and 3-bit i-quants with activations in Q8_K,
// as ggml's generic vec_dot_iq{2_xxs,2_xs,2_s,3_xxs,3_s}_q8_K compute them:
// per group of eight weights a codebook entry (iqgrids.go) and eight sign
// bits, an integer sum per 32 weights times its odd scale (2s+1), and per
// block of 256 the float product of the two scales and that sum. They
// replace the dequantising product (dotDequant), which took 14–17 ns a
// weight here against about 1.

// dotGrid8 is Σ_j g[j]·q[j]·(−1 if bit j of signs), g's bytes little
// first: eight weights of a codebook entry against eight activations.
func dotGrid8(g uint64, signs byte, q []byte) int32 {
	q = q[:8]
	var s int32
	for j := 0; j < 8; j++ {
		v := int32(byte(g>>(8*j))) * int32(int8(q[j]))
		neg := int32(signs>>j) & 1 // branch-free: the signs are random
		s += (v ^ -neg) + neg
	}
	return s
}

// q8kQS is the 256 activation bytes of a Q8_K block.
func q8kQS(xb []byte) []byte { return xb[4 : 4+QKK] }

func dotIQ2XXSGeneric(cols int, w, x []byte) float32 {
	const wb, xbB = 2 + QKK/4, 292
	var sumf float32
	for b := 0; b < cols/QKK; b++ {
		blk, xb := w[b*wb:(b+1)*wb], x[b*xbB:(b+1)*xbB]
		d := F16ToF32(le16(blk)) * q8kD(xb)
		q8 := q8kQS(xb)
		var bsum int32
		for ib := 0; ib < QKK/32; ib++ {
			qs := blk[2+8*ib : 2+8*ib+8]
			aux1 := le32(qs[4:])
			var sumi int32
			for l := 0; l < 4; l++ {
				sumi += dotGrid8(iq2xxsGrid[qs[l]], ksign(aux1>>(7*l)), q8[32*ib+8*l:])
			}
			bsum += sumi * int32(2*(aux1>>28)+1)
		}
		sumf += float32(d * float32(bsum))
	}
	return 0.125 * sumf
}

func dotIQ2XSGeneric(cols int, w, x []byte) float32 {
	const wb, xbB = 2 + QKK/4 + QKK/32, 292
	var sumf float32
	for b := 0; b < cols/QKK; b++ {
		blk, xb := w[b*wb:(b+1)*wb], x[b*xbB:(b+1)*xbB]
		d := F16ToF32(le16(blk)) * q8kD(xb)
		qs, scales := blk[2:2+QKK/4], blk[2+QKK/4:]
		q8 := q8kQS(xb)
		var bsum int32
		for ib := 0; ib < QKK/32; ib++ {
			var sumi [2]int32
			for l := 0; l < 4; l++ {
				v := le16(qs[2*(4*ib+l):])
				sumi[l/2] += dotGrid8(iq2xsGrid[v&511], ksign(uint32(v>>9)), q8[32*ib+8*l:])
			}
			bsum += sumi[0]*int32(2*(scales[ib]&0xf)+1) + sumi[1]*int32(2*(scales[ib]>>4)+1)
		}
		sumf += float32(d * float32(bsum))
	}
	return 0.125 * sumf
}

func dotIQ2SGeneric(cols int, w, x []byte) float32 {
	const wb, xbB = 2 + QKK/4 + QKK/32 + QKK/32, 292
	var sumf float32
	for b := 0; b < cols/QKK; b++ {
		blk, xb := w[b*wb:(b+1)*wb], x[b*xbB:(b+1)*xbB]
		d := F16ToF32(le16(blk)) * q8kD(xb)
		qs, signs := blk[2:2+QKK/8], blk[2+QKK/8:2+QKK/4]
		qh, scales := blk[2+QKK/4:2+QKK/4+QKK/32], blk[2+QKK/4+QKK/32:]
		q8 := q8kQS(xb)
		var bsum int32
		for ib := 0; ib < QKK/32; ib++ {
			var sumi [2]int32
			for l := 0; l < 4; l++ {
				idx := uint16(qs[4*ib+l]) | uint16(qh[ib])<<(8-2*l)&0x300
				sumi[l/2] += dotGrid8(iq2sGrid[idx], signs[4*ib+l], q8[32*ib+8*l:])
			}
			bsum += int32(1+2*(scales[ib]&0xf))*sumi[0] + int32(1+2*(scales[ib]>>4))*sumi[1]
		}
		sumf += float32(d * float32(bsum))
	}
	return 0.125 * sumf
}

func dotIQ3XXSGeneric(cols int, w, x []byte) float32 {
	const wb, xbB = 2 + 3*QKK/8, 292
	var sumf float32
	for b := 0; b < cols/QKK; b++ {
		blk, xb := w[b*wb:(b+1)*wb], x[b*xbB:(b+1)*xbB]
		d := F16ToF32(le16(blk)) * q8kD(xb)
		qs, gas := blk[2:2+QKK/4], blk[2+QKK/4:]
		q8 := q8kQS(xb)
		var bsum int32
		for ib := 0; ib < QKK/32; ib++ {
			aux := le32(gas[4*ib:])
			var sumi int32
			for l := 0; l < 4; l++ {
				g := uint64(iq3xxsGrid[qs[8*ib+2*l]]) | uint64(iq3xxsGrid[qs[8*ib+2*l+1]])<<32
				sumi += dotGrid8(g, ksign(aux>>(7*l)), q8[32*ib+8*l:])
			}
			bsum += sumi * int32(2*(aux>>28)+1)
		}
		sumf += float32(d * float32(bsum))
	}
	return 0.25 * sumf
}

func dotIQ3SGeneric(cols int, w, x []byte) float32 {
	const wb, xbB = 2 + QKK/4 + QKK/32 + QKK/8 + QKK/64, 292
	var sumf float32
	for b := 0; b < cols/QKK; b++ {
		blk, xb := w[b*wb:(b+1)*wb], x[b*xbB:(b+1)*xbB]
		d := F16ToF32(le16(blk)) * q8kD(xb)
		qs := blk[2 : 2+QKK/4]
		qh := blk[2+QKK/4 : 2+QKK/4+QKK/32]
		signs := blk[2+QKK/4+QKK/32 : 2+QKK/4+QKK/32+QKK/8]
		scales := blk[2+QKK/4+QKK/32+QKK/8:]
		q8 := q8kQS(xb)
		var bsum int32
		for ib := 0; ib < QKK/32; ib++ {
			var sumi int32
			for l := 0; l < 4; l++ {
				i1 := uint16(qs[8*ib+2*l]) | uint16(qh[ib])<<(8-2*l)&256
				i2 := uint16(qs[8*ib+2*l+1]) | uint16(qh[ib])<<(7-2*l)&256
				g := uint64(iq3sGrid[i1]) | uint64(iq3sGrid[i2])<<32
				sumi += dotGrid8(g, signs[4*ib+l], q8[32*ib+8*l:])
			}
			s := scales[ib/2] & 0xf
			if ib%2 == 1 {
				s = scales[ib/2] >> 4
			}
			bsum += sumi * int32(2*s+1)
		}
		sumf += float32(d * float32(bsum))
	}
	return sumf
}
