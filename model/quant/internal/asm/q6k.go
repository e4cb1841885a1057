package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// q6kColB is the size of a repacked Q6_K block column (sixteen rows'
// 210-byte super-blocks and 32 bytes of padding after d, so that every
// load is one aligned line), q6kScales and q6kQuants where its scales and
// quants start (see repackQ6K in model/quant).
const (
	q6kColB   = 16*210 + 32
	q6kScales = 64
	q6kQuants = q6kScales + 4*64
)

// q6kKernels generates gemmQ6KR16x<na>VNNI for na = 1..8 and their
// constants.
func q6kKernels() {
	c := q6kConsts{
		b30: splat("vnnib30", 0x30303030),
		// VPDPWSSD word pairs that take -32 times the low (even
		// sub-block) or the high (odd) of a dword of two Q8_K bsums.
		m32: [2]Mem{splat("vnniq6km32lo", 0x0000FFE0), splat("vnniq6km32hi", 0xFFE00000)},
	}
	for na := 1; na <= 8; na++ {
		q6kr16(fmt.Sprintf("gemmQ6KR16x%dVNNI", na), na, c)
	}
}

// Software prefetching of the Q6_K sixteen-row kernels, as q4kr16's:
// from q6kPrefetchMin vectors on, q6kPrefetchCols columns (6.8 KiB)
// ahead. BenchmarkRepackedFromMemory (62 MB of Q6_K), eight vectors: one
// thread 61 -> 74-82 G multiply-adds a second, two 101-108 -> 122-148.
const q6kPrefetchMin, q6kPrefetchCols = 5, 2

type q6kConsts struct {
	b30 Mem
	m32 [2]Mem
}

// q6kr16 generates the kernel of repacked Q6_K weights (see repackQ6K in
// model/quant): a group of sixteen rows, one 3360-byte super-block column
// after the other, against na (1-8) Q8_K activation vectors, one row per
// 32-bit lane. A column holds d[16] (f16), the rows' sixteen int8 scales
// as four arrays of sixteen dwords, then sixteen triples of 64-byte chunks
// (A, B, H: ql bytes 64n+4k.., ql bytes 64n+32+4k.., qh bytes 32n+4k..,
// row r at 4r), read in order, so the weights are one forward stream as
// in q4kr16. Triple 8n+k gives every row's elements 128n+32j+4k..+3 for
// j = 0..3, as unsigned 6-bit bytes:
//
//	j=0: A&0x0F | (H<<4)&0x30    j=1: B&0x0F | (H<<2)&0x30
//	j=2: (A>>4)&0x0F | H&0x30    j=3: (B>>4)&0x0F | (H>>2)&0x30
//
// (the high bits masked to a clean register, then one VPTERNLOGD
// bit-select with the nibble mask).
//
// Per row, vector and super-block the integer sum is exact: isum = sum
// over the sixteen sub-blocks s of sc_s * (VPDPBUSD(q, x) - 32*bsum_s),
// the sub-block's sum starting from -32*bsum_s (a VPDPWSSD of the bsums'
// dword with the word pair (-32, 0) or (0, -32)), then one VPMULLD by the
// rows' sign-extended scales and a VPADDD. The float side is one fused
// step, acc = float(isum)*(d*d_x) + acc with the product rounded to
// float32, and out[16*a+r] is lane r of vector a's accumulator (no
// horizontal sum).
//
// Registers: Z0 the nibble mask, Z1 0x30 bytes, Z2 the bsum word pair,
// Z3-Z5 a triple, Z6 the weights being built (or a scale), Z7 a shifted
// nibble; Z16+a the accumulators, Z24+a isum, and the sub-block sums in
// what is left: a pass over the four triples of a quarter (n, k/4) serves
// the four sub-blocks 8n+2j+k/4 it feeds when they fit (na <= 4), two at a
// time (na 5, 6) or one (na 7, 8), reloading the triples from L1.
func q6kr16(name string, na int, c q6kConsts) {
	header(name, "func(nb int, w *byte, x *byte, xstride int, out *float32, ostride int)")
	if na > 4 {
		LEAQ(Mem{Base: R10, Index: R9, Scale: 2}, R11)
		ADDQ(R9, R11)
	}
	all := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
		Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}
	acc := func(a int) VecPhysical { return all[16+a] }
	isum := func(a int) VecPhysical { return all[24+a] }
	var free []VecPhysical
	for i := 8; i < 32; i++ {
		if i >= 16 && i < 16+na || i >= 24 && i < 24+na {
			continue
		}
		free = append(free, all[i])
	}
	g := 4 // sub-blocks per pass over a quarter's triples
	for g*na > len(free) {
		g /= 2
	}
	part := func(jj, a int) VecPhysical { return free[jj*na+a] }
	A, B, H, wz, sh := Z3, Z4, Z5, Z6, Z7
	for a := 0; a < na; a++ {
		VPXORD(acc(a), acc(a), acc(a))
	}
	Comment("Z0 = 0x0F bytes, Z1 = 0x30 bytes")
	VMOVDQU32(b0F, Z0)
	VMOVDQU32(c.b30, Z1)
	loopStart(name)
	for a := 0; a < na; a++ {
		VPXORD(isum(a), isum(a), isum(a))
	}
	pf := 0
	if na >= q6kPrefetchMin {
		pf = q6kPrefetchCols * q6kColB
	}
	if pf > 0 {
		for l := 0; l < 5; l++ {
			PREFETCHT0(Mem{Base: RSI, Disp: 64*l + pf})
		}
	}
	for n := 0; n < 2; n++ {
		for kh := 0; kh < 2; kh++ {
			VMOVDQU32(c.m32[kh], Z2)
			for j0 := 0; j0 < 4; j0 += g {
				js := []int{}
				for j := j0; j < j0+g; j++ {
					js = append(js, j)
				}
				Comment(fmt.Sprintf("sub-blocks %v: start from -32*bsum", sbs(n, kh, js)))
				for jj, j := range js {
					s := 8*n + 2*j + kh
					for a := 0; a < na; a++ {
						p := part(jj, a)
						VPXORD(p, p, p)
						Instruction(&ir.Instruction{Opcode: "VPDPWSSD.BCST", Operands: []Op{xaddr(a, 260+4*(s/2)), Z2, p}})
					}
				}
				for k := 4 * kh; k < 4*kh+4; k++ {
					t := q6kQuants + 192*(8*n+k)
					needA, needB := false, false
					for _, j := range js {
						needA = needA || j%2 == 0
						needB = needB || j%2 == 1
					}
					if needA {
						VMOVDQU64(Mem{Base: RSI, Disp: t}, A)
					}
					if needB {
						VMOVDQU64(Mem{Base: RSI, Disp: t + 64}, B)
					}
					VMOVDQU64(Mem{Base: RSI, Disp: t + 128}, H)
					if j0 == 0 && pf > 0 {
						for l := 0; l < 3; l++ {
							PREFETCHT0(Mem{Base: RSI, Disp: t + 64*l + pf})
						}
					}
					for jj, j := range js {
						nib := []VecPhysical{A, B}[j%2]
						// wz = the high bits at 4-5, nothing else
						switch j {
						case 0:
							VPSLLW(U8(4), H, wz)
						case 1:
							VPSLLW(U8(2), H, wz)
						case 3:
							VPSRLW(U8(2), H, wz)
						}
						if j == 2 {
							VPANDD(Z1, H, wz)
						} else {
							VPANDD(Z1, wz, wz)
						}
						if j >= 2 {
							VPSRLW(U8(4), nib, sh)
							nib = sh
						}
						// wz = Z0 ? nib : wz, bit by bit
						VPTERNLOGD(U8(0xD8), Z0, nib, wz)
						for a := 0; a < na; a++ {
							Instruction(&ir.Instruction{Opcode: "VPDPBUSD.BCST", Operands: []Op{xaddr(a, 4+128*n+32*j+4*k), wz, part(jj, a)}})
						}
					}
				}
				for jj, j := range js {
					s := 8*n + 2*j + kh
					Comment(fmt.Sprintf("isum += sc_%d * sum", s))
					m := Mem{Base: RSI, Disp: q6kScales + 64*(s/4)}
					if s%4 == 3 {
						VPSRAD(U8(24), m, wz)
					} else {
						VPSLLD(U8(24-8*(s%4)), m, wz)
						VPSRAD(U8(24), wz, wz)
					}
					for a := 0; a < na; a++ {
						p := part(jj, a)
						VPMULLD(wz, p, p)
						VPADDD(p, isum(a), isum(a))
					}
				}
			}
		}
	}
	Comment("acc += (d*d_x) * isum; Z6 = d")
	VCVTPH2PS(Mem{Base: RSI}, wz)
	kColumnEnd(name, na, q6kColB, wz, func(int) VecPhysical { return sh }, isum, acc)
}

// sbs lists the sub-blocks 8n+2j+kh of js, for comments.
func sbs(n, kh int, js []int) []int {
	var s []int
	for _, j := range js {
		s = append(s, 8*n+2*j+kh)
	}
	return s
}

// q5kColB is the size of a repacked Q5_K block column (sixteen rows'
// 176-byte super-blocks, 44 cache lines); see repackQ5K in model/quant
// for its layout, which q5kQh and q5kQs follow.
const q5kColB = 16 * 176

// q5kQh is where fifth-bit chunk k (0-7) of a repacked Q5_K column
// starts: each before nibble chunk k, so that the first pass over the
// column reads one forward stream.
func q5kQh(k int) int { return 256 + 128*k }

// q5kQs is where nibble chunk c (0-31) of a repacked Q5_K column starts.
func q5kQs(c int) int {
	if c < 8 {
		return q5kQh(c) + 64
	}
	return 256 + 1024 + 64*(c-8)
}

// q5kWeights builds, in q4kr16's chunk loop of a Q5_K kernel (chunk
// 8j+k of nibbles in Z1, 0x10 bytes in Z5, the nibble mask in Z0), the
// 5-bit weights of sub-block 2j (h = 0) in Z2 and of sub-block 2j+1 (h =
// 1) in Z3, or both (h < 0): the nibble, and the fifth bits (bit s of
// fifth-bit chunk k, for sub-block s) shifted to bit 4 and masked, merged
// by one VPTERNLOGD bit-select. Z4 and Z7 are clobbered.
func q5kWeights(j, h, k int) {
	VMOVDQU64(Mem{Base: RSI, Disp: q5kQh(k)}, Z4)
	for hh := 0; hh < 2; hh++ {
		if h != hh && h >= 0 {
			continue
		}
		dst, nib := []VecPhysical{Z2, Z3}[hh], Z1
		switch s := 2*j + hh; {
		case s < 4:
			VPSLLW(U8(4-s), Z4, dst)
			VPANDD(Z5, dst, dst)
		case s == 4:
			VPANDD(Z5, Z4, dst)
		default:
			VPSRLW(U8(s-4), Z4, dst)
			VPANDD(Z5, dst, dst)
		}
		if hh == 1 {
			VPSRLW(U8(4), Z1, Z7)
			nib = Z7
		}
		// dst = Z0 ? nib : dst, bit by bit
		VPTERNLOGD(U8(0xD8), Z0, nib, dst)
	}
}
