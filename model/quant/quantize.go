package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The quantisers below port ggml's reference quantisers (ggml-quants.c,
// the path ggml_quantize_chunk takes without an importance matrix) with the
// same float32 operation order, so their output is byte-identical to
// ggml's. Explicit float32(...) conversions keep Go from fusing a*b+c into
// an FMA, which ggml-base (built without -mfma) never does either.

type quantFunc func(src []float32, dst []byte)

var quantizers = map[Type]quantFunc{
	F32:    quantF32,
	F16:    quantF16,
	BF16:   quantBF16,
	Q4_0:   quantQ4_0,
	Q4_1:   quantQ4_1,
	Q5_0:   quantQ5_0,
	Q5_1:   quantQ5_1,
	Q8_0:   quantQ8_0,
	Q8_K:   quantizeRowQ8K,
	Q2_K:   quantQ2K,
	Q3_K:   quantQ3K,
	Q4_K:   quantQ4K,
	Q5_K:   quantQ5K,
	Q6_K:   quantQ6K,
	IQ4_NL: quantIQ4NL,
	IQ4_XS: quantIQ4XS,
	MXFP4:  quantMXFP4,
}

// CanQuantize reports whether Quantize supports t.
func CanQuantize(t Type) bool { _, ok := quantizers[t]; return ok }

// Quantize converts len(src) floats to type t into dst, exactly like ggml's
// ggml_quantize_chunk without an importance matrix. len(src) must be a
// multiple of t's block size and len(dst) must equal the byte size of
// len(src) elements. Rows are independent blocks, so a whole tensor can be
// quantised in one call when its row length is a multiple of the block size.
func Quantize(t Type, src []float32, dst []byte) error {
	fn, ok := quantizers[t]
	if !ok {
		if !t.Known() {
			return fmt.Errorf("%w: %d", ErrUnknownType, uint32(t))
		}
		return fmt.Errorf("%w: quantize %s", ErrUnsupported, t)
	}
	need, err := t.RowBytes(len(src))
	if err != nil {
		return err
	}
	if len(dst) != need {
		return fmt.Errorf("%w: %d %s elements need %d bytes, got %d", ErrSize, len(src), t, need, len(dst))
	}
	fn(src, dst)
	return nil
}

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, F32ToF16(f)) }

func quantF32(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func quantF16(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
	}
}

func quantBF16(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
	}
}

// signedAbsMax returns the element with the largest magnitude (first one on
// ties) and that magnitude.
func signedAbsMax(x []float32) (max, amax float32) {
	for _, v := range x {
		if a := abs32(v); amax < a {
			amax, max = a, v
		}
	}
	return
}

func minMax(x []float32) (mn, mx float32) {
	mn, mx = math.MaxFloat32, -math.MaxFloat32
	for _, v := range x {
		if v < mn {
			mn = v
		}
		if v > mx {
			mx = v
		}
	}
	return
}

// cInt8 converts like C's (int8_t)(float): truncation toward zero.
func cInt8(f float32) int32 { return int32(int8(int32(f))) }

func quantQ4_0(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*18 : (i+1)*18]
		max, _ := signedAbsMax(x)
		d := max / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, d)
		for j := 0; j < 16; j++ {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			xi0 := min(15, cInt8(x0+8.5))
			xi1 := min(15, cInt8(x1+8.5))
			b[2+j] = byte(xi0) | byte(xi1)<<4
		}
	}
}

func quantQ4_1(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*20 : (i+1)*20]
		mn, mx := minMax(x)
		d := (mx - mn) / 15
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, d)
		putF16(b[2:], mn)
		for j := 0; j < 16; j++ {
			x0 := float32((x[j] - mn) * id)
			x1 := float32((x[j+16] - mn) * id)
			xi0 := min(15, cInt8(x0+0.5))
			xi1 := min(15, cInt8(x1+0.5))
			b[4+j] = byte(xi0) | byte(xi1)<<4
		}
	}
}

func quantQ5_0(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*22 : (i+1)*22]
		max, _ := signedAbsMax(x)
		d := max / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, d)
		var qh uint32
		for j := 0; j < 16; j++ {
			x0 := float32(x[j] * id)
			x1 := float32(x[j+16] * id)
			xi0 := uint32(uint8(min(31, cInt8(x0+16.5))))
			xi1 := uint32(uint8(min(31, cInt8(x1+16.5))))
			b[6+j] = byte(xi0&0xf) | byte(xi1&0xf)<<4
			qh |= ((xi0 & 0x10) >> 4) << j
			qh |= ((xi1 & 0x10) >> 4) << (j + 16)
		}
		binary.LittleEndian.PutUint32(b[2:], qh)
	}
}

func quantQ5_1(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*24 : (i+1)*24]
		mn, mx := minMax(x)
		d := (mx - mn) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, d)
		putF16(b[2:], mn)
		var qh uint32
		for j := 0; j < 16; j++ {
			x0 := float32((x[j] - mn) * id)
			x1 := float32((x[j+16] - mn) * id)
			xi0 := uint32(uint8(int32(x0 + 0.5)))
			xi1 := uint32(uint8(int32(x1 + 0.5)))
			b[8+j] = byte(xi0&0xf) | byte(xi1&0xf)<<4
			qh |= ((xi0 & 0x10) >> 4) << j
			qh |= ((xi1 & 0x10) >> 4) << (j + 16)
		}
		binary.LittleEndian.PutUint32(b[4:], qh)
	}
}

// roundf is C's roundf: half away from zero.
func roundf(f float32) float32 { return float32(math.Round(float64(f))) }

func quantQ8_0(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*34 : (i+1)*34]
		var amax float32
		for _, v := range x {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		putF16(b, d)
		for j, v := range x {
			b[2+j] = byte(int8(roundf(v * id)))
		}
	}
}

// makeQKX2Quants is ggml's make_qkx2_quants: a scale/min search for
// asymmetric quantisation to [0, nmax]. It returns scale and -min.
func makeQKX2Quants(nmax int, x, weights []float32, L, Laux []uint8, rmin, rdelta float32, nstep int, useMAD bool) (float32, float32) {
	n := len(x)
	mn, mx := x[0], x[0]
	sumW := weights[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		if x[i] < mn {
			mn = x[i]
		}
		if x[i] > mx {
			mx = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if mn > 0 {
		mn = 0
	}
	if mx == mn {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -mn
	}
	fnmax := float32(nmax)
	iscale := fnmax / (mx - mn)
	scale := 1 / iscale
	var bestErr float32
	for i := 0; i < n; i++ {
		l := nearestInt(iscale * (x[i] - mn))
		L[i] = uint8(max(0, min(int32(nmax), l)))
		diff := float32(scale*float32(L[i])) + mn - x[i]
		if useMAD {
			diff = abs32(diff)
		} else {
			diff = diff * diff
		}
		bestErr += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -mn
	}
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + float32(rdelta*float32(is)) + fnmax) / (mx - mn)
		var sumL, sumL2, sumXL float32
		for i := 0; i < n; i++ {
			l := nearestInt(iscale * (x[i] - mn))
			l = max(0, min(int32(nmax), l))
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += float32(w * fl)
			sumL2 += float32(float32(w*fl) * fl)
			sumXL += float32(float32(w*fl) * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var curErr float32
			for i := 0; i < n; i++ {
				diff := float32(thisScale*float32(Laux[i])) + thisMin - x[i]
				if useMAD {
					diff = abs32(diff)
				} else {
					diff = diff * diff
				}
				curErr += float32(weights[i] * diff)
			}
			if curErr < bestErr {
				copy(L[:n], Laux[:n])
				bestErr = curErr
				scale = thisScale
				mn = thisMin
			}
		}
	}
	return scale, -mn
}

func quantQ2K(src []float32, dst []byte) {
	var L [QKK]uint8
	var Laux [16]uint8
	var weights [16]float32
	var mins, scales [16]float32
	const q4scale = 15
	for i := 0; i < len(src)/QKK; i++ {
		x := src[i*QKK : (i+1)*QKK]
		b := dst[i*84 : (i+1)*84]
		ysc := b[0:16]
		qs := b[16:80]
		var maxScale, maxMin float32
		for j := 0; j < 16; j++ {
			for l := 0; l < 16; l++ {
				weights[l] = abs32(x[16*j+l])
			}
			scales[j], mins[j] = makeQKX2Quants(3, x[16*j:16*j+16], weights[:], L[16*j:], Laux[:], -0.5, 0.1, 15, true)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		if maxScale > 0 {
			iscale := q4scale / maxScale
			for j := 0; j < 16; j++ {
				ysc[j] = uint8(nearestInt(iscale * scales[j]))
			}
			putF16(b[80:], maxScale/q4scale)
		} else {
			clear(ysc)
			putF16(b[80:], 0)
		}
		if maxMin > 0 {
			iscale := q4scale / maxMin
			for j := 0; j < 16; j++ {
				l := nearestInt(iscale * mins[j])
				ysc[j] |= uint8(l << 4)
			}
			putF16(b[82:], maxMin/q4scale)
		} else {
			putF16(b[82:], 0)
		}
		yd, ydmin := f16at(b[80:]), f16at(b[82:])
		for j := 0; j < 16; j++ {
			d := yd * float32(ysc[j]&0xf)
			if d == 0 {
				continue
			}
			dm := ydmin * float32(ysc[j]>>4)
			for ii := 0; ii < 16; ii++ {
				l := nearestInt((x[16*j+ii] + dm) / d)
				L[16*j+ii] = uint8(max(0, min(3, l)))
			}
		}
		for j := 0; j < QKK; j += 128 {
			for l := 0; l < 32; l++ {
				qs[j/4+l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6
			}
		}
	}
}

// makeQ3Quants is ggml's make_q3_quants with do_rmse = true.
func makeQ3Quants(nmax int32, x []float32, L []int8) float32 {
	n := len(x)
	max, amax := signedAbsMax(x)
	if amax < 1e-15 {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i := 0; i < n; i++ {
		l := nearestInt(iscale * x[i])
		l = max32(-nmax, min(nmax-1, l))
		L[i] = int8(l)
		w := x[i] * x[i]
		fl := float32(l)
		sumlx += float32(float32(w*x[i]) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for itry := 0; itry < 5; itry++ {
		nChanged := 0
		for i := 0; i < n; i++ {
			w := x[i] * x[i]
			li := float32(L[i])
			slx := sumlx - float32(float32(w*x[i])*li)
			if slx > 0 {
				sl2 := suml2 - float32(float32(w*li)*li)
				newL := nearestInt(float32(x[i]*sl2) / slx)
				newL = max32(-nmax, min(nmax-1, newL))
				if newL != int32(L[i]) {
					fn := float32(newL)
					slx += float32(float32(w*x[i]) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if sl2 > 0 && float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
						L[i] = int8(newL)
						sumlx, suml2 = slx, sl2
						nChanged++
					}
				}
			}
		}
		if nChanged == 0 {
			break
		}
	}
	for i := 0; i < n; i++ {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

func max32(a, b int32) int32 {
	if a > b {
		return a
	}
	return b
}

func quantQ3K(src []float32, dst []byte) {
	var L [QKK]int8
	var scales [16]float32
	for i := 0; i < len(src)/QKK; i++ {
		x := src[i*QKK : (i+1)*QKK]
		b := dst[i*110 : (i+1)*110]
		hmask := b[0:32]
		qs := b[32:96]
		ysc := b[96:108]
		var maxScale, amax float32
		for j := 0; j < 16; j++ {
			scales[j] = makeQ3Quants(4, x[16*j:16*j+16], L[16*j:])
			if s := abs32(scales[j]); s > amax {
				amax, maxScale = s, scales[j]
			}
		}
		clear(ysc)
		if maxScale != 0 {
			iscale := -32 / maxScale
			for j := 0; j < 16; j++ {
				l := int32(int8(nearestInt(iscale * scales[j])))
				l = max32(-32, min(31, l)) + 32
				if j < 8 {
					ysc[j] = byte(l & 0xf)
				} else {
					ysc[j-8] |= byte((l & 0xf) << 4)
				}
				l >>= 4
				ysc[j%4+8] |= byte(l << (2 * (j / 4)))
			}
			putF16(b[108:], 1/iscale)
		} else {
			putF16(b[108:], 0)
		}
		yd := f16at(b[108:])
		for j := 0; j < 16; j++ {
			var sc int32
			if j < 8 {
				sc = int32(ysc[j] & 0xf)
			} else {
				sc = int32(ysc[j-8] >> 4)
			}
			sc = (sc | int32((ysc[8+j%4]>>(2*(j/4)))&3)<<4) - 32
			d := yd * float32(sc)
			if d == 0 {
				continue
			}
			for ii := 0; ii < 16; ii++ {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(max32(-4, min(3, l)) + 4)
			}
		}
		clear(hmask)
		m, hm := 0, byte(1)
		for j := 0; j < QKK; j++ {
			if L[j] > 3 {
				hmask[m] |= hm
				L[j] -= 4
			}
			if m++; m == QKK/8 {
				m, hm = 0, hm<<1
			}
		}
		for j := 0; j < QKK; j += 128 {
			for l := 0; l < 32; l++ {
				qs[j/4+l] = byte(L[j+l]) | byte(L[j+l+32])<<2 | byte(L[j+l+64])<<4 | byte(L[j+l+96])<<6
			}
		}
	}
}

// quantK4Common is the shared body of quantize_row_q4_K_ref (nmax 15) and
// quantize_row_q5_K_ref (nmax 31): it fills d, dmin and the 12 scale bytes of
// b and the levels L.
func quantK4Common(x []float32, b []byte, L *[QKK]uint8, nmax int, rmin float32, nstep int) {
	var Laux [32]uint8
	var weights [32]float32
	var mins, scales [8]float32
	var maxScale, maxMin float32
	for j := 0; j < 8; j++ {
		xb := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range xb {
			sumX2 += float32(v * v)
		}
		avX := float32(math.Sqrt(float64(sumX2 / 32)))
		for l, v := range xb {
			weights[l] = avX + abs32(v)
		}
		scales[j], mins[j] = makeQKX2Quants(nmax, xb, weights[:], L[32*j:], Laux[:], rmin, 0.1, nstep, false)
		if scales[j] > maxScale {
			maxScale = scales[j]
		}
		if mins[j] > maxMin {
			maxMin = mins[j]
		}
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := b[4:16]
	for j := 0; j < 8; j++ {
		ls := min(63, uint8(nearestInt(invScale*scales[j])))
		lm := min(63, uint8(nearestInt(invMin*mins[j])))
		if j < 4 {
			sc[j] = ls
			sc[j+4] = lm
		} else {
			sc[j+4] = ls&0xf | (lm&0xf)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	putF16(b, maxScale/63)
	putF16(b[2:], maxMin/63)
	yd, ydmin := f16at(b), f16at(b[2:])
	for j := 0; j < 8; j++ {
		s, m := scaleMinK4(j, sc)
		d := yd * float32(s)
		if d == 0 {
			continue
		}
		dm := ydmin * float32(m)
		for ii := 0; ii < 32; ii++ {
			l := nearestInt((x[32*j+ii] + dm) / d)
			L[32*j+ii] = uint8(max(0, min(int32(nmax), l)))
		}
	}
}

func quantQ4K(src []float32, dst []byte) {
	var L [QKK]uint8
	for i := 0; i < len(src)/QKK; i++ {
		x := src[i*QKK : (i+1)*QKK]
		b := dst[i*144 : (i+1)*144]
		quantK4Common(x, b, &L, 15, -1, 20)
		q := b[16:144]
		for j := 0; j < QKK; j += 64 {
			for l := 0; l < 32; l++ {
				q[l] = L[j+l] | L[j+l+32]<<4
			}
			q = q[32:]
		}
	}
}

func quantQ5K(src []float32, dst []byte) {
	var L [QKK]uint8
	for i := 0; i < len(src)/QKK; i++ {
		x := src[i*QKK : (i+1)*QKK]
		b := dst[i*176 : (i+1)*176]
		quantK4Common(x, b, &L, 31, -0.5, 15)
		qh := b[16:48]
		ql := b[48:176]
		clear(qh)
		m1, m2 := byte(1), byte(2)
		for n := 0; n < QKK; n += 64 {
			for j := 0; j < 32; j++ {
				l1 := L[n+j]
				if l1 > 15 {
					l1 -= 16
					qh[j] |= m1
				}
				l2 := L[n+j+32]
				if l2 > 15 {
					l2 -= 16
					qh[j] |= m2
				}
				ql[j] = l1 | l2<<4
			}
			m1 <<= 2
			m2 <<= 2
			ql = ql[32:]
		}
	}
}

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 and no weights.
func makeQXQuants(nmax int32, x []float32, L []int8) float32 {
	n := len(x)
	max, amax := signedAbsMax(x)
	if amax < 1e-15 {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0
	}
	iscale := float32(-nmax) / max
	var sumlx, suml2 float32
	for i := 0; i < n; i++ {
		l := nearestInt(iscale * x[i])
		l = max32(-nmax, min(nmax-1, l))
		L[i] = int8(l + nmax)
		w := x[i] * x[i]
		fl := float32(l)
		sumlx += float32(float32(w*x[i]) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / max
		sumlx, suml2 = 0, 0
		for i := 0; i < n; i++ {
			l := nearestInt(iscale * x[i])
			l = max32(-nmax, min(nmax-1, l))
			w := x[i] * x[i]
			fl := float32(l)
			sumlx += float32(float32(w*x[i]) * fl)
			suml2 += float32(float32(w*fl) * fl)
		}
		if suml2 > 0 && float32(sumlx*sumlx) > float32(best*suml2) {
			for i := 0; i < n; i++ {
				l := nearestInt(iscale * x[i])
				L[i] = int8(nmax + max32(-nmax, min(nmax-1, l)))
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

func quantQ6K(src []float32, dst []byte) {
	var L [QKK]int8
	var scales [16]float32
	for i := 0; i < len(src)/QKK; i++ {
		x := src[i*QKK : (i+1)*QKK]
		b := dst[i*210 : (i+1)*210]
		var maxScale, maxAbsScale float32
		for ib := 0; ib < 16; ib++ {
			s := makeQXQuants(32, x[16*ib:16*ib+16], L[16*ib:])
			scales[ib] = s
			if a := abs32(s); a > maxAbsScale {
				maxAbsScale, maxScale = a, s
			}
		}
		if maxAbsScale < 1e-15 {
			clear(b)
			continue
		}
		ysc := b[192:208]
		iscale := -128 / maxScale
		putF16(b[208:], 1/iscale)
		for ib := 0; ib < 16; ib++ {
			ysc[ib] = byte(int8(min(127, nearestInt(iscale*scales[ib]))))
		}
		yd := f16at(b[208:])
		for j := 0; j < 16; j++ {
			d := yd * float32(int8(ysc[j]))
			if d == 0 {
				continue
			}
			for ii := 0; ii < 16; ii++ {
				l := nearestInt(x[16*j+ii] / d)
				L[16*j+ii] = int8(max32(-32, min(31, l)) + 32)
			}
		}
		ql := b[0:128]
		qh := b[128:192]
		for j := 0; j < QKK; j += 128 {
			for l := 0; l < 32; l++ {
				q1 := byte(L[j+l]) & 0xf
				q2 := byte(L[j+l+32]) & 0xf
				q3 := byte(L[j+l+64]) & 0xf
				q4 := byte(L[j+l+96]) & 0xf
				ql[l] = q1 | q3<<4
				ql[l+32] = q2 | q4<<4
				qh[l] = byte(L[j+l])>>4 | (byte(L[j+l+32])>>4)<<2 | (byte(L[j+l+64])>>4)<<4 | (byte(L[j+l+96])>>4)<<6
			}
			ql = ql[64:]
			qh = qh[32:]
		}
	}
}

// bestIndexInt8 is ggml's best_index_int8 over the IQ4_NL codebook.
func bestIndexInt8(x float32) uint8 {
	val := &kvaluesIQ4NL
	if x <= float32(val[0]) {
		return 0
	}
	if x >= float32(val[15]) {
		return 15
	}
	ml, mu := 0, 15
	for mu-ml > 1 {
		mav := (ml + mu) / 2
		if x < float32(val[mav]) {
			mu = mav
		} else {
			ml = mav
		}
	}
	if x-float32(val[mu-1]) < float32(val[mu])-x {
		return uint8(mu - 1)
	}
	return uint8(mu)
}

// quantIQ4Impl is ggml's quantize_row_iq4_nl_impl without importance
// weights for one super-block of superSize (32 for IQ4_NL, 256 for IQ4_XS)
// with 32-element blocks. It writes d and qs, and for IQ4_XS the scales.
func quantIQ4Impl(superSize int, x []float32, dh []byte, q4 []byte, scalesH []byte, scalesL []byte, ntry int) {
	var L [QKK]uint8
	var scales [QKK / 32]float32
	var weight [32]float32
	clear(q4[:superSize/2])
	putF16(dh, 0)
	values := &kvaluesIQ4NL
	v0 := float32(values[0])
	var maxScale, amaxScale float32
	for ib := 0; ib < superSize/32; ib++ {
		xb := x[ib*32 : ib*32+32]
		Lb := L[ib*32:]
		for j, v := range xb {
			weight[j] = v * v
		}
		max, amax := signedAbsMax(xb)
		if amax < 1e-15 {
			scales[ib] = 0
			continue
		}
		var d float32
		if ntry > 0 {
			d = -max / v0
		} else {
			d = max / v0
		}
		id := 1 / d
		var sumqx, sumq2 float32
		for j, v := range xb {
			l := bestIndexInt8(id * v)
			Lb[j] = l
			q := float32(values[l])
			w := weight[j]
			sumqx += float32(float32(w*q) * v)
			sumq2 += float32(float32(w*q) * q)
		}
		d = 0
		if sumq2 > 0 {
			d = sumqx / sumq2
		}
		best := d * sumqx
		for itry := -ntry; itry <= ntry; itry++ {
			id = (float32(itry) + v0) / max
			sumqx, sumq2 = 0, 0
			for j, v := range xb {
				l := bestIndexInt8(id * v)
				q := float32(values[l])
				w := weight[j]
				sumqx += float32(float32(w*q) * v)
				sumq2 += float32(float32(w*q) * q)
			}
			if sumq2 > 0 && float32(sumqx*sumqx) > float32(best*sumq2) {
				d = sumqx / sumq2
				best = d * sumqx
			}
		}
		scales[ib] = d
		if a := abs32(d); a > amaxScale {
			amaxScale, maxScale = a, d
		}
	}
	if superSize/32 > 1 {
		nb := superSize / 32
		var sh uint16
		d := -maxScale / 32
		putF16(dh, d)
		var id float32
		if d != 0 {
			id = 1 / d
		}
		for ib := 0; ib < nb; ib++ {
			l := nearestInt(id * scales[ib])
			l = max32(-32, min(31, l))
			dl := d * float32(l)
			var idl float32
			if dl != 0 {
				idl = 1 / dl
			}
			xb := x[ib*32 : ib*32+32]
			for j, v := range xb {
				L[ib*32+j] = bestIndexInt8(idl * v)
			}
			l += 32
			lLo, lHi := uint8(l&0xf), uint16(l>>4)
			if ib%2 == 0 {
				scalesL[ib/2] = lLo
			} else {
				scalesL[ib/2] |= lLo << 4
			}
			sh |= lHi << (2 * (ib % 8))
		}
		binary.LittleEndian.PutUint16(scalesH, sh)
	} else {
		putF16(dh, scales[0])
		if ntry > 0 {
			var id float32
			if scales[0] != 0 {
				id = 1 / scales[0]
			}
			for j := 0; j < superSize; j++ {
				L[j] = bestIndexInt8(id * x[j])
			}
		}
	}
	for i := 0; i < superSize/32; i++ {
		for j := 0; j < 16; j++ {
			q4[16*i+j] = L[32*i+j] | L[32*i+16+j]<<4
		}
	}
}

// quantMXFP4 is ggml's quantize_row_mxfp4_ref: per block of 32 the
// exponent e = floor(log2(amax)) - 2 + 127 (0 for a block of zeros),
// and each value the level (kvaluesMXFP4 times half of 2^(e-127)) nearest
// to it, the first of equals.
func quantMXFP4(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		x := src[i*QK : (i+1)*QK]
		b := dst[i*17 : (i+1)*17]
		var amax float32
		for _, v := range x {
			// ggml's comparison: a NaN never raises amax (max would
			// make it NaN and the block's exponent 0).
			if a := float32(math.Abs(float64(v))); amax < a {
				amax = a
			}
		}
		var e byte
		if amax > 0 {
			// log2f, correctly rounded to float32 as glibc's is, then
			// floored; clamped where ggml's cast to uint8 is undefined.
			l := math.Floor(float64(float32(math.Log2(float64(amax)))))
			e = byte(min(max(l-2+127, 0), 255))
		}
		d := e8m0Half(e)
		b[0] = e
		best := func(v float32) byte {
			bi, be := 0, float32(math.Abs(float64(float32(kvaluesMXFP4[0])*d-v)))
			for k := 1; k < 16; k++ {
				if err := float32(math.Abs(float64(float32(kvaluesMXFP4[k])*d - v))); err < be {
					bi, be = k, err
				}
			}
			return byte(bi)
		}
		for j := 0; j < QK/2; j++ {
			b[1+j] = best(x[j]) | best(x[j+QK/2])<<4
		}
	}
}

// iq4NTry is the ntry ggml_quantize_chunk passes (quantize_iq4_nl/xs).
const iq4NTry = 7

func quantIQ4NL(src []float32, dst []byte) {
	for i := 0; i < len(src)/QK; i++ {
		b := dst[i*18 : (i+1)*18]
		quantIQ4Impl(QK, src[i*QK:(i+1)*QK], b[0:2], b[2:18], nil, nil, iq4NTry)
	}
}

func quantIQ4XS(src []float32, dst []byte) {
	for i := 0; i < len(src)/QKK; i++ {
		b := dst[i*136 : (i+1)*136]
		quantIQ4Impl(QKK, src[i*QKK:(i+1)*QKK], b[0:2], b[8:136], b[2:4], b[4:8], iq4NTry)
	}
}
