// The AVX2/FMA/F16C kernels (-kernels avx2: dot_avx2_amd64.s). Each
// mirrors the generic Go kernel of the same type (model/quant's
// dot_generic.go) and ggml-cpu's AVX2 vec_dot: integer products with
// VPMADDUBSW/VPMADDWD on the quantised blocks, one float FMA per block.
// Callers guarantee the pointer arguments cover nb whole blocks.
//
// These kernels were hand-written assembly (dot_amd64.s) before they were
// moved here; the generator emits exactly the instructions of that file
// (same registers, frames and order), so results stay bit-identical to the
// scalar twins and to the four-vector and VNNI kernels that reproduce their
// float operations. Registers are physical throughout for that reason.

package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The read-only tables of the AVX2 kernels (avx2Consts).
var k4shuf, q6shuf, iq4nlvals, bitsshuf, bitsmask, q3shuf, m4bytes, m2bytes, m1bytes, mxfp4vals Mem

// iq4nlValues is ggml's kvalues_iq4nl, the sixteen IQ4_NL/IQ4_XS levels.
var iq4nlValues = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// mxfp4Values is ggml's kvalues_mxfp4: MXFP4's sixteen E2M1 levels, doubled
// (its block scale is halved to match).
var mxfp4Values = [16]int8{0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12}

// avx2Consts declares the tables, byte for byte those of the former
// hand-written file.
func avx2Consts() {
	// k4shuf: per 32-byte group j (0-7), the VPSHUFB indexes 2j, 2j+1 in
	// every word (broadcasts int16 scale j).
	k4shuf = bytes("k4shuf", 256, func(i int) uint32 { return uint32(2*(i/32) + i%2) })
	// q6shuf: per 8 bytes j, index j (broadcasts int8 scale j).
	q6shuf = bytes("q6shuf", 128, func(i int) uint32 { return uint32(i / 8) })
	iq4nlvals = bytes("iq4nlvals", 32, func(i int) uint32 { return uint32(uint8(iq4nlValues[i%16])) })
	bitsshuf = bytes("bitsshuf", 32, func(i int) uint32 { return uint32(i / 8) })
	bitsmask = bytes("bitsmask", 32, func(i int) uint32 { return uint32(^uint8(1 << (i % 8))) })
	// q3shuf: as k4shuf, 16 bytes per scale.
	q3shuf = bytes("q3shuf", 128, func(i int) uint32 { return uint32(2*(i/16) + i%2) })
	m4bytes = bytes("m4bytes", 32, func(int) uint32 { return 0x0F })
	m2bytes = bytes("m2bytes", 32, func(int) uint32 { return 0x03 })
	m1bytes = bytes("m1bytes", 32, func(int) uint32 { return 0x01 })
}

// mxfp4Consts declares MXFP4's table (after the others, so the tables
// before it keep their place in the file).
func mxfp4Consts() {
	mxfp4vals = bytes("mxfp4vals", 32, func(i int) uint32 { return uint32(uint8(mxfp4Values[i%16])) })
}

// bytes declares n (a multiple of 8) bytes of read-only data, byte i
// holding v(i), as the quadwords the hand-written tables had.
func bytes(name string, n int, v func(i int) uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for q := 0; q < n; q += 8 {
		var u uint64
		for b := 7; b >= 0; b-- {
			u = u<<8 | uint64(uint8(v(q+b)))
		}
		DATA(q, U64(u))
	}
	return m
}

// frame is the local frame size of the kernel being generated (set by x4).
var frame int

// local addresses the frame slot d bytes (d negative) below the frame's
// top, the former hand-written file's name-d(SP): hardware (frame+d)(SP).
func local(d int) Mem { return Mem{Base: StackPointer, Disp: frame + d} }

// avx2Kernels generates dot_avx2_amd64.s (in the order of the former
// hand-written file).
func avx2Kernels() {
	avx2Consts()
	kdotF16()
	kdotQ8_0Q4_0("dotQ8_0AVX2", "q8", false)
	kdotQ8_0Q4_0("dotQ4_0AVX2", "q4", true)
	kdotQ45K("dotQ4KAVX2", "q4k", false)
	kdotQ6K()
	kdotLegacy("dotIQ4NLAVX2", "iq4nl", "iq4nl", 18, 2)
	kdotLegacy("dotQ5_0AVX2", "q50", "q5_0", 22, 6)
	kdotLegacy("dotQ4_1AVX2", "q41", "q4_1", 20, 4)
	kdotLegacy("dotQ5_1AVX2", "q51", "q5_1", 24, 8)
	kdotBF16()
	kdotQ45K("dotQ5KAVX2", "q5k", true)
	kdotIQ4XS()
	kdotQ2K()
	kdotQ3K()
	kdotQ45Kx4("dotQ4Kx4AVX2", "q4kx4", false)
	kdotQ8_0x4()
	kdotQ4_0x4()
	kdotQ6Kx4()
	kdotQ45Kx4("dotQ5Kx4AVX2", "q5kx4", true)
	kdotIQ4NLx4()
	kdotQ5_0x4()
	kcvtF16ToF32()
	kcvtF32ToF16()
	kdotQ2Kx4()
	kdotQ3Kx4()
	kdotIQ4XSx4()
	mxfp4Consts()
	kdotLegacy("dotMXFP4AVX2", "mxfp4", "mxfp4", 17, 1)
	kdotMXFP4x4()
}

// Register tables for the loops below: ys[i] is Yi, xrows[v] the base of
// activation vector v in the four-vector kernels.
var (
	ys    = [16]VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9, Y10, Y11, Y12, Y13, Y14, Y15}
	xrows = [4]GPPhysical{R8, R9, R10, R11}
)

// imm is n as the immediate type the instruction forms accept (ADDQ:
// imm8 or imm32; the assembler picks the encoding from the value).
func imm(n int) Op {
	if n < 256 {
		return U8(n)
	}
	return U32(n)
}

// splatD sets every dword of y to v, through EAX.
func splatD(v uint32, y VecPhysical) {
	MOVL(U32(v), EAX)
	VMOVD(EAX, y.AsX())
	VPBROADCASTD(y.AsX(), y)
}

// ones16 sets every word of y to 1.
func ones16(y VecPhysical) {
	VPCMPEQW(y, y, y)
	VPSRLW(U8(15), y, y)
}

// f16 converts the f16 at m to float32 in the low lane of x (through EAX).
func f16(m Mem, x VecPhysical) {
	MOVWLZX(m, EAX)
	VMOVD(EAX, x)
	VCVTPH2PS(x, x)
}

// blockLoop runs body for each of the CX blocks (labels name+"loop" and
// name+"done"; CX counts down).
func blockLoop(name string, body func()) {
	TESTQ(RCX, RCX)
	JEQ(LabelRef(name + "done"))
	Label(name + "loop")
	body()
	DECQ(RCX)
	JNZ(LabelRef(name + "loop"))
	Label(name + "done")
}

// ---- single-vector kernels: func(nb int, w, x *byte) float32 ----

// single declares a single-vector kernel and loads CX = nb, SI = w, DI = x.
func single(name string) {
	TEXT(name, NOSPLIT, "func(nb int, w, x *byte) float32")
	Pragma("noescape")
	Load(Param("nb"), RCX)
	Load(Param("w"), RSI)
	Load(Param("x"), RDI)
}

// singleEnd returns the sum of Y0's eight floats (HSUM8 order).
func singleEnd() {
	hsum8(Y0, X0, X5, X6)
	VZEROUPPER()
	Store(X5, ReturnIndex(0))
	RET()
}

// blockEnd adds the float conversion of the int32 sums in Y9, times the
// block scale in X1, to Y0 and moves to the next block (wb weight bytes,
// xb activation bytes).
func blockEnd(wb, xb int) {
	VCVTDQ2PS(Y9, Y9)
	VBROADCASTSS(X1, Y1)
	VFMADD231PS(Y9, Y1, Y0)
	ADDQ(imm(wb), RSI)
	ADDQ(imm(xb), RDI)
}

// sumF32 adds the float accumulators of the F16 kernel ((Y0+Y1)+(Y2+Y3))
// or the BF16 kernel (Y0+Y1) into X0's lane 0 (hsumX0).
func sumF32(four bool) {
	VADDPS(Y1, Y0, Y0)
	if four {
		VADDPS(Y3, Y2, Y2)
		VADDPS(Y2, Y0, Y0)
	}
	hsumX0()
}

// hsumX0 adds Y0's eight floats into X0's lane 0: (hi+lo), then two
// VHADDPS (the F16/BF16/Q4_1/Q5_1 order; the others use hsum8).
func hsumX0() {
	VEXTRACTF128(U8(1), Y0, X1)
	VADDPS(X1, X0, X0)
	VHADDPS(X0, X0, X0)
	VHADDPS(X0, X0, X0)
}

// kdotF16 generates dotF16AVX2(a, b *byte, n int) float32: a and b hold n
// halves; n must be a multiple of 8. Four accumulators, 32 halves a step,
// then 8 at a time.
func kdotF16() {
	TEXT("dotF16AVX2", NOSPLIT, "func(a, b *byte, n int) float32")
	Pragma("noescape")
	Load(Param("a"), RSI)
	Load(Param("b"), RDI)
	Load(Param("n"), RCX)
	for i := 0; i < 4; i++ {
		VXORPS(ys[i], ys[i], ys[i])
	}
	Label("f16loop32")
	CMPQ(RCX, U8(32))
	JLT(LabelRef("f16loop8"))
	for i := 0; i < 4; i++ {
		VCVTPH2PS(Mem{Base: RSI, Disp: 16 * i}, ys[4+i])
	}
	for i := 0; i < 4; i++ {
		VCVTPH2PS(Mem{Base: RDI, Disp: 16 * i}, ys[8+i])
	}
	for i := 0; i < 4; i++ {
		VFMADD231PS(ys[8+i], ys[4+i], ys[i])
	}
	ADDQ(U8(64), RSI)
	ADDQ(U8(64), RDI)
	SUBQ(U8(32), RCX)
	JMP(LabelRef("f16loop32"))
	Label("f16loop8")
	CMPQ(RCX, U8(8))
	JLT(LabelRef("f16done"))
	VCVTPH2PS(Mem{Base: RSI}, Y4)
	VCVTPH2PS(Mem{Base: RDI}, Y8)
	VFMADD231PS(Y8, Y4, Y0)
	ADDQ(U8(16), RSI)
	ADDQ(U8(16), RDI)
	SUBQ(U8(8), RCX)
	JMP(LabelRef("f16loop8"))
	Label("f16done")
	sumF32(true)
	VZEROUPPER()
	Store(X0, ReturnIndex(0))
	RET()
}

// kdotBF16 generates dotBF16AVX2(a, b *byte, n int) float32 (n a multiple
// of 8): two accumulators, 16 values a step, then 8.
func kdotBF16() {
	TEXT("dotBF16AVX2", NOSPLIT, "func(a, b *byte, n int) float32")
	Pragma("noescape")
	Load(Param("a"), RSI)
	Load(Param("b"), RDI)
	Load(Param("n"), RCX)
	VXORPS(Y0, Y0, Y0)
	VXORPS(Y1, Y1, Y1)
	Label("bf16loop16")
	CMPQ(RCX, U8(16))
	JLT(LabelRef("bf16loop8"))
	VPMOVZXWD(Mem{Base: RSI}, Y4)
	VPMOVZXWD(Mem{Base: RSI, Disp: 16}, Y5)
	VPMOVZXWD(Mem{Base: RDI}, Y6)
	VPMOVZXWD(Mem{Base: RDI, Disp: 16}, Y7)
	for i := 4; i < 8; i++ {
		VPSLLD(U8(16), ys[i], ys[i]) // bf16 -> f32: the high half
	}
	VFMADD231PS(Y6, Y4, Y0)
	VFMADD231PS(Y7, Y5, Y1)
	ADDQ(U8(32), RSI)
	ADDQ(U8(32), RDI)
	SUBQ(U8(16), RCX)
	JMP(LabelRef("bf16loop16"))
	Label("bf16loop8")
	CMPQ(RCX, U8(8))
	JLT(LabelRef("bf16done"))
	VPMOVZXWD(Mem{Base: RSI}, Y4)
	VPMOVZXWD(Mem{Base: RDI}, Y6)
	VPSLLD(U8(16), Y4, Y4)
	VPSLLD(U8(16), Y6, Y6)
	VFMADD231PS(Y6, Y4, Y0)
	ADDQ(U8(16), RSI)
	ADDQ(U8(16), RDI)
	SUBQ(U8(8), RCX)
	JMP(LabelRef("bf16loop8"))
	Label("bf16done")
	sumF32(false)
	VZEROUPPER()
	Store(X0, ReturnIndex(0))
	RET()
}

// scalesF16 sets X1 to f16(wOff(SI)) * f16(xOff(DI)) (through AX, BX, X7).
func scalesF16(wOff, xOff int) {
	MOVWLZX(Mem{Base: RSI, Disp: wOff}, EAX)
	MOVWLZX(Mem{Base: RDI, Disp: xOff}, EBX)
	VMOVD(EAX, X1)
	VMOVD(EBX, X7)
	VCVTPH2PS(X1, X1)
	VCVTPH2PS(X7, X7)
	VMULSS(X7, X1, X1)
}

// scalesE8M0 sets X1 to half the E8M0 scale at wOff(SI) (ggml's
// ggml_e8m0_to_fp32_half: the bits (e-1)<<23, or the subnormal
// 0x00200000<<e for e < 2) times the f16 at xOff(DI); clobbers AX, BX,
// DX, X7.
func scalesE8M0(wOff, xOff int) {
	e8m0Half(Mem{Base: RSI, Disp: wOff}, X1)
	MOVWLZX(Mem{Base: RDI, Disp: xOff}, EAX)
	VMOVD(EAX, X7)
	VCVTPH2PS(X7, X7)
	VMULSS(X7, X1, X1)
}

// e8m0Half sets x to half the E8M0 scale byte at m (ggml's
// ggml_e8m0_to_fp32_half: the bits (e-1)<<23, or the subnormal
// 0x00200000<<e for e < 2); clobbers AX, BX, DX.
func e8m0Half(m Mem, x VecPhysical) {
	MOVBLZX(m, EAX)
	LEAL(Mem{Base: RAX, Disp: -1}, EBX)
	SHLL(U8(23), EBX) // (e-1)<<23
	LEAL(Mem{Base: RAX, Disp: 1}, EDX)
	SHLL(U8(21), EDX) // (e+1)<<21: 0x00200000<<e for e of 0 and 1
	CMPL(EAX, U8(2))
	CMOVLCS(EDX, EBX)
	VMOVD(EBX, x)
}

// minTerm adds f16(wOff(SI)) * f16(xOff(DI)) to X8 (the min term of
// Q4_1/Q5_1); clobbers Y5, Y6.
func minTerm(wOff, xOff int) {
	MOVWLZX(Mem{Base: RSI, Disp: wOff}, EAX)
	MOVWLZX(Mem{Base: RDI, Disp: xOff}, EBX)
	VMOVD(EAX, X5)
	VMOVD(EBX, X6)
	VCVTPH2PS(X5, X5)
	VCVTPH2PS(X6, X6)
	VFMADD231SS(X6, X5, X8)
}

// sdot adds the product of the 32 signed weight bytes in Y2 and the 32
// signed activation bytes at off(DI), as floats scaled by X1, to Y0 (ggml's
// mul_sum_i8_pairs: VPSIGNB makes the weights unsigned for VPMADDUBSW). Y15
// must hold int16 ones; uses Y1, Y3-Y6.
func sdot(off int) {
	VMOVDQU(Mem{Base: RDI, Disp: off}, Y3)
	VPSIGNB(Y2, Y2, Y4)
	VPSIGNB(Y2, Y3, Y5)
	VPMADDUBSW(Y5, Y4, Y6)
	floatFMA()
}

// udot is sdot for unsigned weights.
func udot(off int) {
	VPMADDUBSW(Mem{Base: RDI, Disp: off}, Y2, Y6)
	floatFMA()
}

// floatFMA: Y0 += X1 * float(int16 pair sums of Y6).
func floatFMA() {
	VPMADDWD(Y15, Y6, Y6)
	VCVTDQ2PS(Y6, Y6)
	VBROADCASTSS(X1, Y1)
	VFMADD231PS(Y6, Y1, Y0)
}

// nibbles expands the 16 nibble bytes at off(SI) into 32 bytes 0..15 in y
// (low nibbles first; t: scratch). mask must hold 0x0F bytes.
func nibbles(m Mem, y, t, mask VecPhysical) {
	VMOVDQU(m, y.AsX())
	VPSRLW(U8(4), y.AsX(), t.AsX())
	VINSERTI128(U8(1), t.AsX(), y, y)
	VPAND(mask, y, y)
}

// bits32 expands the 32 bits at off(SI) into 32 bytes in Y3, 0xFF where
// the bit is set (ggml's bytes_from_bits_32). Needs Y13 = bitsshuf, Y12 =
// bitsmask, Y11 = all ones.
func bits32(off int) {
	MOVL(Mem{Base: RSI, Disp: off}, EAX)
	VMOVD(EAX, X3)
	VPBROADCASTD(X3, Y3)
	VPSHUFB(Y13, Y3, Y3)
	VPOR(Y12, Y3, Y3)
	VPCMPEQB(Y11, Y3, Y3)
}

// kdotQ8_0Q4_0 generates dotQ8_0AVX2 (34-byte blocks: f16 d, 32 int8) or
// dotQ4_0AVX2 (18-byte blocks: f16 d, 16 nibble bytes, q-8).
func kdotQ8_0Q4_0(name, l string, q4 bool) {
	single(name)
	VXORPS(Y0, Y0, Y0)
	ones16(Y15)
	wb := 34
	if q4 {
		splatD(0x0F0F0F0F, Y14)
		splatD(0x08080808, Y13)
		wb = 18
	}
	Label(l + "loop")
	TESTQ(RCX, RCX)
	JEQ(LabelRef(l + "done"))
	scalesF16(0, 0)
	if q4 {
		nibbles(Mem{Base: RSI, Disp: 2}, Y2, Y3, Y14)
		VPSUBB(Y13, Y2, Y2)
	} else {
		VMOVDQU(Mem{Base: RSI, Disp: 2}, Y2)
	}
	sdot(2)
	ADDQ(U8(wb), RSI)
	ADDQ(U8(34), RDI)
	DECQ(RCX)
	JMP(LabelRef(l + "loop"))
	Label(l + "done")
	singleEnd()
}

// kdotLegacy generates the IQ4_NL, MXFP4, Q5_0, Q4_1 and Q5_1 kernels
// (kind: "iq4nl", "mxfp4", "q5_0", "q4_1", "q5_1"; wb bytes a weight
// block, its nibbles at qs): per block the weight scale (MXFP4's E8M0,
// the others' f16; for the _1 types also the min term into X8), the
// nibbles (through a table of levels for IQ4_NL and MXFP4), for Q5 the
// fifth bits of qh and one sdot/udot.
func kdotLegacy(name, l, kind string, wb, qs int) {
	min := kind == "q4_1" || kind == "q5_1"
	single(name)
	VXORPS(Y0, Y0, Y0)
	if min {
		VXORPS(X8, X8, X8)
	}
	ones16(Y15)
	splatD(0x0F0F0F0F, Y14)
	VMOVDQU(bitsshuf, Y13)
	VMOVDQU(bitsmask, Y12)
	VPCMPEQB(Y11, Y11, Y11)
	switch kind {
	case "iq4nl":
		VMOVDQU(iq4nlvals, Y10)
	case "mxfp4":
		VMOVDQU(mxfp4vals, Y10)
	case "q5_0":
		splatD(0xF0F0F0F0, Y10)
	case "q5_1":
		splatD(0x10101010, Y10)
	}
	blockLoop(l, func() {
		if kind == "mxfp4" {
			scalesE8M0(0, 0)
		} else {
			scalesF16(0, 0)
		}
		if min {
			minTerm(2, 2)
		}
		nibbles(Mem{Base: RSI, Disp: qs}, Y2, Y3, Y14)
		switch kind {
		case "iq4nl", "mxfp4":
			VPSHUFB(Y2, Y10, Y2) // the IQ4_NL or MXFP4 levels
		case "q5_0":
			bits32(2)
			VPANDN(Y10, Y3, Y3) // 0xF0 where the high bit is 0: q - 16
			VPOR(Y3, Y2, Y2)
		case "q5_1":
			bits32(4)
			VPAND(Y10, Y3, Y3) // 0x10 where the high bit is set
			VPOR(Y3, Y2, Y2)
		}
		if min {
			udot(4)
			ADDQ(U8(wb), RSI)
			ADDQ(U8(36), RDI)
		} else {
			sdot(2)
			ADDQ(U8(wb), RSI)
			ADDQ(U8(34), RDI)
		}
	})
	if !min {
		singleEnd()
		return
	}
	hsumX0()
	VADDSS(X8, X0, X0)
	VZEROUPPER()
	Store(X0, ReturnIndex(0))
	RET()
}

// kScales unpacks the twelve 6-bit scale/min bytes of a Q4_K/Q5_K block at
// 4(SI) with ggml's utmp shuffle: the eight scales in RAX, the eight mins
// in aux (minsInU3 false) or u3; clobbers RBX, RDX, t.
func kScales(u3, t, aux GPPhysical, minsInU3 bool) {
	MOVL(Mem{Base: RSI, Disp: 4}, EAX)  // utmp0
	MOVL(Mem{Base: RSI, Disp: 8}, EBX)  // utmp1
	MOVL(Mem{Base: RSI, Disp: 12}, EDX) // utmp2
	// utmp3 = ((utmp2 >> 4) & 0x0f0f0f0f) | (((utmp1 >> 6) & 0x03030303) << 4)
	MOVL(EDX, u3.As32())
	SHRL(U8(4), u3.As32())
	ANDL(U32(0x0f0f0f0f), u3.As32())
	hi2(EBX, t, 6)
	ORL(t.As32(), u3.As32())
	// uaux = utmp1 & 0x3f3f3f3f
	MOVL(EBX, aux.As32())
	ANDL(U32(0x3f3f3f3f), aux.As32())
	// utmp1 = (utmp2 & 0x0f0f0f0f) | (((utmp0 >> 6) & 0x03030303) << 4)
	ANDL(U32(0x0f0f0f0f), EDX)
	hi2(EAX, t, 6)
	ORL(t.As32(), EDX)
	ANDL(U32(0x3f3f3f3f), EAX) // utmp0
	// scales: AX | DX<<32; mins: uaux | utmp3<<32
	SHLQ(U8(32), RDX)
	ORQ(RDX, RAX)
	SHLQ(U8(32), u3)
	if minsInU3 {
		ORQ(aux, u3)
	} else {
		ORQ(u3, aux)
	}
}

// hi2 sets t (32-bit) to ((src >> sh) & 0x03030303) << 4 (sh 0: no shift).
func hi2(src Register, t GPPhysical, sh int) {
	MOVL(src, t.As32())
	if sh > 0 {
		SHRL(U8(sh), t.As32())
	}
	ANDL(U32(0x03030303), t.As32())
	SHLL(U8(4), t.As32())
}

// kdotQ45K generates dotQ4KAVX2 and dotQ5KAVX2. w: Q4_K blocks (d, dmin,
// scales[12], qs[128]) or Q5_K (d, dmin, scales[12], qh[32], qs[128]); x:
// Q8_K blocks (d float32, qs[256], bsums[16] int16).
func kdotQ45K(name, l string, q5 bool) {
	single(name)
	VXORPS(Y0, Y0, Y0) // acc
	splatD(0x0F0F0F0F, Y14)
	if q5 {
		splatD(0x01010101, Y12)
	}
	blockLoop(l, func() {
		// d = y.d * x.d ; dmin = y.d * x.dmin
		MOVWLZX(Mem{Base: RSI}, EAX)
		MOVWLZX(Mem{Base: RSI, Disp: 2}, EBX)
		VMOVD(EAX, X1)
		VMOVD(EBX, X2)
		VCVTPH2PS(X1, X1)
		VCVTPH2PS(X2, X2)
		VMOVSS(Mem{Base: RDI}, X3)
		VMULSS(X3, X1, X1) // d
		VMULSS(X3, X2, X2) // dmin (positive)
		kScales(R8, R9, R10, false)
		VMOVQ(RAX, X4)
		VPMOVZXBW(X4, X4)              // 8 int16 scales
		VINSERTI128(U8(1), X4, Y4, Y4) // replicated in both lanes
		VMOVQ(R10, X5)
		VPMOVZXBW(X5, X5) // 8 int16 mins
		// mins: madd(mins, hadd(bsums lo, bsums hi))
		VMOVDQU(Mem{Base: RDI, Disp: 260}, X6)
		VPHADDW(Mem{Base: RDI, Disp: 276}, X6, X6)
		VPMADDWD(X6, X5, X5) // VEX.128: upper half of Y5 is zero
		VCVTDQ2PS(Y5, Y5)
		VBROADCASTSS(X2, Y2)
		VFNMADD231PS(Y5, Y2, Y0) // acc -= dmin*y.d * sum(mins*bsums)
		if q5 {
			q5kGroups()
		} else {
			q4kGroups()
		}
		wb := 144
		if q5 {
			wb = 176
		}
		blockEnd(wb, 292)
	})
	singleEnd()
}

// q4kGroups: Y9 = the int32 sums over the four groups of 64 of a Q4_K
// block, a loop over R13 (q4 in R11, q8 in R12, scale shuffles in R14).
func q4kGroups() {
	VPXOR(Y9, Y9, Y9)                   // sumi
	LEAQ(Mem{Base: RSI, Disp: 16}, R11) // q4
	LEAQ(Mem{Base: RDI, Disp: 4}, R12)  // q8
	MOVQ(U32(0), R13)
	LEAQ(k4shuf, R14)
	Label("q4kinner")
	VPSHUFB(Mem{Base: R14}, Y4, Y10)           // scale_l
	VPSHUFB(Mem{Base: R14, Disp: 32}, Y4, Y11) // scale_h
	VMOVDQU(Mem{Base: R11}, Y2)
	VPSRLW(U8(4), Y2, Y3)
	VPAND(Y14, Y2, Y2) // q4l
	VPAND(Y14, Y3, Y3) // q4h
	VPMADDUBSW(Mem{Base: R12}, Y2, Y2)
	VPMADDWD(Y10, Y2, Y2)
	VPMADDUBSW(Mem{Base: R12, Disp: 32}, Y3, Y3)
	VPMADDWD(Y11, Y3, Y3)
	VPADDD(Y2, Y9, Y9)
	VPADDD(Y3, Y9, Y9)
	ADDQ(U8(32), R11)
	ADDQ(U8(64), R12)
	ADDQ(U8(64), R14)
	INCQ(R13)
	CMPQ(R13, U8(4))
	JLT(LabelRef("q4kinner"))
}

// q5kGroups: Y9 = the int32 sums over the four groups of 64 of a Q5_K
// block, unrolled: group g's low and high nibbles (qs at 48+32g) get the
// fifth bits 2g and 2g+1 of the qh bytes (Y13). Y12 = 0x01 bytes.
func q5kGroups() {
	VMOVDQU(Mem{Base: RSI, Disp: 16}, Y13) // qh
	VPXOR(Y9, Y9, Y9)
	LEAQ(Mem{Base: RSI, Disp: 48}, R11)
	LEAQ(Mem{Base: RDI, Disp: 4}, R12)
	LEAQ(k4shuf, R14)
	for g := 0; g < 4; g++ {
		VPSHUFB(Mem{Base: R14, Disp: 64 * g}, Y4, Y10)
		VPSHUFB(Mem{Base: R14, Disp: 64*g + 32}, Y4, Y11)
		VMOVDQU(Mem{Base: R11, Disp: 32 * g}, Y2)
		VPSRLW(U8(4), Y2, Y3)
		VPAND(Y14, Y2, Y2)
		VPAND(Y14, Y3, Y3)
		for h, q := range []VecPhysical{Y2, Y3} {
			t := ys[5+h]
			VPSRLW(U8(2*g+h), Y13, t)
			VPAND(Y12, t, t)
			VPSLLW(U8(4), t, t)
			VPOR(t, q, q)
		}
		VPMADDUBSW(Mem{Base: R12, Disp: 64 * g}, Y2, Y2)
		VPMADDWD(Y10, Y2, Y2)
		VPMADDUBSW(Mem{Base: R12, Disp: 64*g + 32}, Y3, Y3)
		VPMADDWD(Y11, Y3, Y3)
		VPADDD(Y2, Y9, Y9)
		VPADDD(Y3, Y9, Y9)
	}
}

// kdotQ6K generates dotQ6KAVX2. w: Q6_K blocks (ql[128], qh[64],
// scales[16] int8, d); x: Q8_K blocks. Two iterations (R13) of 128 values.
func kdotQ6K() {
	single("dotQ6KAVX2")
	VXORPS(Y0, Y0, Y0)
	splatD(0x0F0F0F0F, Y14) // m4
	splatD(0x03030303, Y13) // m2
	blockLoop("q6k", func() {
		f16(Mem{Base: RSI, Disp: 208}, X1)
		VMULSS(Mem{Base: RDI}, X1, X1)          // d
		VMOVDQU(Mem{Base: RSI, Disp: 192}, X15) // 16 int8 scales
		VPXOR(Y9, Y9, Y9)                       // sumi
		MOVQ(RSI, R11)                          // ql
		LEAQ(Mem{Base: RSI, Disp: 128}, R10)    // qh
		LEAQ(Mem{Base: RDI, Disp: 4}, R12)      // q8
		LEAQ(q6shuf, R14)
		MOVQ(U32(0), R13)
		Label("q6kinner")
		VMOVDQU(Mem{Base: R11}, Y2)           // q4bits1
		VMOVDQU(Mem{Base: R11, Disp: 32}, Y3) // q4bits2
		VMOVDQU(Mem{Base: R10}, Y4)           // q4bitsH
		// high parts q4h_k = ((q4bitsH >> 2k) & m2) << 4 in Y5-Y8
		for k := 0; k < 4; k++ {
			h := ys[5+k]
			if k == 0 {
				VPAND(Y13, Y4, h)
			} else {
				VPSRLW(U8(2*k), Y4, h)
				VPAND(Y13, h, h)
			}
			VPSLLW(U8(4), h, h)
		}
		// q4_0 = (q4bits1 & m4) | q4h_0 ; q4_2 = ((q4bits1>>4) & m4) | q4h_2
		VPAND(Y14, Y2, Y10)
		VPOR(Y5, Y10, Y10) // q4_0
		VPSRLW(U8(4), Y2, Y2)
		VPAND(Y14, Y2, Y2)
		VPOR(Y7, Y2, Y7) // q4_2 in Y7
		VPAND(Y14, Y3, Y11)
		VPOR(Y6, Y11, Y11) // q4_1
		VPSRLW(U8(4), Y3, Y3)
		VPAND(Y14, Y3, Y3)
		VPOR(Y8, Y3, Y8) // q4_3 in Y8
		// k = 0..3: q4_k with q8[32k:32k+32] and scales 2k, 2k+1
		for k, q := range []VecPhysical{Y10, Y11, Y7, Y8} {
			VPMADDUBSW(Mem{Base: R12, Disp: 32 * k}, q, q)
			VPSHUFB(Mem{Base: R14, Disp: 16 * k}, X15, X4)
			VPMOVSXBW(X4, Y4)
			VPMADDWD(Y4, q, q)
			VPADDD(q, Y9, Y9)
		}
		ADDQ(U8(64), R11)
		ADDQ(U8(32), R10)
		ADDQ(U32(128), R12)
		ADDQ(U8(64), R14)
		INCQ(R13)
		CMPQ(R13, U8(2))
		JLT(LabelRef("q6kinner"))
		// the -32 offset of every value: sumi -= 32 * sum_k scale_k * bsum_k
		VPMOVSXBW(Mem{Base: RSI, Disp: 192}, Y2)
		VPMADDWD(Mem{Base: RDI, Disp: 260}, Y2, Y12)
		VPSLLD(U8(5), Y12, Y12)
		VPSUBD(Y12, Y9, Y9)
		blockEnd(210, 292)
	})
	singleEnd()
}

// iq4xsScale sets EAX to sub-block scale ls-32 from the next four bits of
// scales_l (sl) and two of scales_h (sh), shifting both on (ls =
// ((scales_l >> 4*ib) & 0xf) | (((scales_h >> 2*ib) & 3) << 4)), and
// broadcasts it as int16 into Y5.
func iq4xsScale(sl, sh GPPhysical) {
	MOVL(sl.As32(), EAX)
	ANDL(U8(15), EAX)
	MOVL(sh.As32(), EBX)
	ANDL(U8(3), EBX)
	SHLL(U8(4), EBX)
	ORL(EBX, EAX)
	SUBL(U8(32), EAX)
	SHRL(U8(4), sl.As32())
	SHRL(U8(2), sh.As32())
	VMOVD(EAX, X5)
	VPBROADCASTW(X5, Y5)
}

// kdotIQ4XS generates dotIQ4XSAVX2. w: IQ4_XS blocks (d, scales_h u16,
// scales_l[4], qs[128]); x: Q8_K blocks. A loop over the eight sub-blocks.
func kdotIQ4XS() {
	single("dotIQ4XSAVX2")
	VXORPS(Y0, Y0, Y0)
	ones16(Y15)
	splatD(0x0F0F0F0F, Y14)
	VMOVDQU(iq4nlvals, Y10)
	blockLoop("iq4xs", func() {
		f16(Mem{Base: RSI}, X1)
		VMULSS(Mem{Base: RDI}, X1, X1)
		MOVWLZX(Mem{Base: RSI, Disp: 2}, R8L) // scales_h
		MOVL(Mem{Base: RSI, Disp: 4}, R9L)    // scales_l[0:4]
		VPXOR(Y9, Y9, Y9)
		LEAQ(Mem{Base: RSI, Disp: 8}, R11)
		LEAQ(Mem{Base: RDI, Disp: 4}, R12)
		MOVQ(U32(0), R13)
		Label("iq4xsinner")
		iq4xsScale(R9, R8)
		nibbles(Mem{Base: R11}, Y2, Y3, Y14)
		VPSHUFB(Y2, Y10, Y2)
		VMOVDQU(Mem{Base: R12}, Y3)
		VPSIGNB(Y2, Y2, Y4)
		VPSIGNB(Y2, Y3, Y6)
		VPMADDUBSW(Y6, Y4, Y6)
		VPMADDWD(Y5, Y6, Y6)
		VPADDD(Y6, Y9, Y9)
		ADDQ(U8(16), R11)
		ADDQ(U8(32), R12)
		INCQ(R13)
		CMPQ(R13, U8(8))
		JLT(LabelRef("iq4xsinner"))
		blockEnd(136, 292)
	})
	singleEnd()
}

// kdotQ2K generates dotQ2KAVX2. w: Q2_K blocks (scales[16], qs[64], d,
// dmin); x: Q8_K blocks.
func kdotQ2K() {
	single("dotQ2KAVX2")
	VXORPS(Y0, Y0, Y0)
	splatD(0x0F0F0F0F, Y14)
	splatD(0x03030303, Y13)
	LEAQ(q3shuf, R14)
	blockLoop("q2k", func() {
		MOVWLZX(Mem{Base: RSI, Disp: 80}, EAX)
		MOVWLZX(Mem{Base: RSI, Disp: 82}, EBX)
		VMOVD(EAX, X1)
		VMOVD(EBX, X2)
		VCVTPH2PS(X1, X1)
		VCVTPH2PS(X2, X2)
		VMOVSS(Mem{Base: RDI}, X3)
		VMULSS(X3, X1, X1) // d
		VMULSS(X3, X2, X2) // dmin
		VMOVDQU(Mem{Base: RSI}, X4)
		VPSRLW(U8(4), X4, X5)
		VPAND(X14, X5, X5) // mins8
		VPAND(X14, X4, X4) // scales8
		VPMOVZXBW(X5, Y5)
		VPMADDWD(Mem{Base: RDI, Disp: 260}, Y5, Y5)
		VCVTDQ2PS(Y5, Y5)
		VBROADCASTSS(X2, Y2)
		VFNMADD231PS(Y5, Y2, Y0) // acc -= dmin*y.d * sum(mins*bsums)
		VPMOVZXBW(X4, Y4)
		VINSERTI128(U8(1), X4, Y4, Y10) // low 8 scales in both lanes
		VEXTRACTI128(U8(1), Y4, X11)
		VINSERTI128(U8(1), X11, Y11, Y11) // high 8 scales in both lanes
		VPXOR(Y9, Y9, Y9)
		LEAQ(Mem{Base: RDI, Disp: 4}, R12)
		// two halves of 32 qs bytes, four 2-bit planes each
		for h, sc := range []VecPhysical{Y10, Y11} {
			VMOVDQU(Mem{Base: RSI, Disp: 16 + 32*h}, Y2)
			for j := 0; j < 4; j++ {
				VPSRLW(U8(2*j), Y2, Y3)
				VPAND(Y13, Y3, Y3)
				VPMADDUBSW(Mem{Base: R12, Disp: 128*h + 32*j}, Y3, Y3)
				VPSHUFB(Mem{Base: R14, Disp: 32 * j}, sc, Y5)
				VPMADDWD(Y5, Y3, Y3)
				VPADDD(Y3, Y9, Y9)
			}
		}
		blockEnd(84, 292)
	})
	singleEnd()
}

// q3Scales unpacks the twelve 6-bit scale bytes of a Q3_K block at 96(SI)
// (ggml's aux shuffle, k1 = 0x03030303, k2 = 0x0f0f0f0f): scales 0-7 in s0,
// 8-15 in RAX (unsigned, 32 too high); clobbers RBX, RDX, s1, t.
func q3Scales(s0, s1, t GPPhysical) {
	MOVL(Mem{Base: RSI, Disp: 96}, EAX)  // aux0
	MOVL(Mem{Base: RSI, Disp: 100}, EBX) // aux1
	MOVL(Mem{Base: RSI, Disp: 104}, EDX) // aux2
	// s0 = (aux0 & k2) | ((aux2 & k1) << 4)
	MOVL(EAX, s0.As32())
	ANDL(U32(0x0f0f0f0f), s0.As32())
	hi2(EDX, t, 0)
	ORL(t.As32(), s0.As32())
	// s1 = (aux1 & k2) | (((aux2 >> 2) & k1) << 4)
	MOVL(EBX, s1.As32())
	ANDL(U32(0x0f0f0f0f), s1.As32())
	hi2(EDX, t, 2)
	ORL(t.As32(), s1.As32())
	SHLQ(U8(32), s1)
	ORQ(s1, s0) // s0 | s1<<32
	// s2 = ((aux0 >> 4) & k2) | (((aux2 >> 4) & k1) << 4)
	SHRL(U8(4), EAX)
	ANDL(U32(0x0f0f0f0f), EAX)
	hi2(EDX, t, 4)
	ORL(t.As32(), EAX)
	// s3 = ((aux1 >> 4) & k2) | (((aux2 >> 6) & k1) << 4)
	SHRL(U8(4), EBX)
	ANDL(U32(0x0f0f0f0f), EBX)
	SHRL(U8(6), EDX)
	ANDL(U32(0x03030303), EDX)
	SHLL(U8(4), EDX)
	ORL(EDX, EBX)
	SHLQ(U8(32), RBX)
	ORQ(RBX, RAX) // s2 | s3<<32
}

// kdotQ3K generates dotQ3KAVX2. w: Q3_K blocks (hmask[32], qs[64],
// scales[12], d); x: Q8_K blocks.
func kdotQ3K() {
	single("dotQ3KAVX2")
	VXORPS(Y0, Y0, Y0)
	splatD(0x03030303, Y13)
	splatD(0x01010101, Y12)
	splatD(0x20202020, X14) // 32s (xmm)
	VPCMPEQB(Y7, Y7, Y7)    // all ones
	LEAQ(q3shuf, R14)
	blockLoop("q3k", func() {
		f16(Mem{Base: RSI, Disp: 108}, X1)
		VMULSS(Mem{Base: RDI}, X1, X1) // d
		q3Scales(R8, R10, R9)
		VMOVQ(R8, X4)
		VPINSRQ(U8(1), RAX, X4, X4)
		VPSUBB(X14, X4, X4)
		VPMOVSXBW(X4, Y4)
		VINSERTI128(U8(1), X4, Y4, Y10)
		VEXTRACTI128(U8(1), Y4, X11)
		VINSERTI128(U8(1), X11, Y11, Y11)
		VMOVDQU(Mem{Base: RSI}, Y15)
		VPXOR(Y7, Y15, Y15) // ~hmask
		VPXOR(Y9, Y9, Y9)
		LEAQ(Mem{Base: RDI, Disp: 4}, R12)
		// two halves of 32 qs bytes, four 2-bit planes each: value
		// (qs >> 2j) & 3, minus 4 where bit 4h+j of ~hmask is set
		for h, sc := range []VecPhysical{Y10, Y11} {
			VMOVDQU(Mem{Base: RSI, Disp: 32 + 32*h}, Y2)
			for j := 0; j < 4; j++ {
				VPSRLW(U8(2*j), Y2, Y3)
				VPAND(Y13, Y3, Y3)
				VPSRLW(U8(4*h+j), Y15, Y4)
				VPAND(Y12, Y4, Y4)
				VPSLLW(U8(2), Y4, Y4)
				VMOVDQU(Mem{Base: R12, Disp: 128*h + 32*j}, Y6)
				VPMADDUBSW(Y6, Y3, Y3)
				VPMADDUBSW(Y6, Y4, Y4)
				VPSUBW(Y4, Y3, Y3)
				VPSHUFB(Mem{Base: R14, Disp: 32 * j}, sc, Y5)
				VPMADDWD(Y5, Y3, Y3)
				VPADDD(Y3, Y9, Y9)
			}
		}
		blockEnd(110, 292)
	})
	singleEnd()
}

// ---- four-vector kernels: func(nb int, w, x *byte, xstride int, out
// *[4]float32): one weight row against four activation rows (xstride
// bytes apart, at R8-R11); float accumulators Y0-Y3. ----

// x4 declares a four-vector kernel with a frame of fr bytes and loads CX =
// nb, SI = w, R8-R11 = the four rows (AX = xstride).
func x4(name string, fr int) {
	TEXT(name, NOSPLIT, "func(nb int, w, x *byte, xstride int, out *[4]float32)")
	Pragma("noescape")
	frame = fr
	if fr > 0 {
		AllocLocal(fr)
	}
	Load(Param("nb"), RCX)
	Load(Param("w"), RSI)
	Load(Param("x"), R8)
	Load(Param("xstride"), RAX)
	for v := 1; v < 4; v++ {
		LEAQ(Mem{Base: xrows[v-1], Index: RAX, Scale: 1}, xrows[v])
	}
}

// x4Zero clears the accumulators Y0-Y3.
func x4Zero() {
	for v := 0; v < 4; v++ {
		VXORPS(ys[v], ys[v], ys[v])
	}
}

// x4ZeroSums clears the int32 sums Y8-Y11.
func x4ZeroSums() {
	for v := 0; v < 4; v++ {
		VPXOR(ys[8+v], ys[8+v], ys[8+v])
	}
}

// x4Advance moves to the next block: wb weight bytes, xb activation bytes.
func x4Advance(wb, xb int) {
	ADDQ(imm(wb), RSI)
	for _, xr := range xrows {
		ADDQ(imm(xb), xr)
	}
}

// x4End stores the horizontal sums (HSUM8 order) of Y0-Y3 to out[0:4]
// (reload: after loading them from the frame's acc0..acc3).
func x4End(reload bool) {
	Load(Param("out"), RDX)
	if reload {
		for v := 0; v < 4; v++ {
			VMOVUPS(local(-128+32*v), ys[v])
		}
	}
	for v := 0; v < 4; v++ {
		hsum8(ys[v], ys[v].AsX(), X5, X6)
		VMOVSS(X5, Mem{Base: RDX, Disp: 4 * v})
	}
	VZEROUPPER()
	RET()
}

// x4Fin adds, for each vector v, (y.d * X14) * float(Y8+v) to Yv (X14: the
// weight block's d as float).
func x4Fin() {
	for v, xr := range xrows {
		VCVTDQ2PS(ys[8+v], ys[8+v])
		VMULSS(Mem{Base: xr}, X14, X5)
		VBROADCASTSS(X5, Y5)
		VFMADD231PS(ys[8+v], Y5, ys[v])
	}
}

// kdotQ80x4 generates the four-vector kernels with Q8_0 activations
// (Q8_0, Q4_0, IQ4_NL, Q5_0 weights; wb bytes a block): unpack leaves the
// signed weights in Y13; the products follow ggml's mul_sum_i8_pairs. The
// four d_w*d_x are formed in the frame's first 16 bytes (tmp-16).
func kdotQ80x4(name, l string, fr, wb int, setup, unpack func()) {
	kdotQ80x4Scaled(name, l, fr, wb, setup, unpack, func() { f16(Mem{Base: RSI}, X4) })
}

// kdotQ80x4Scaled is kdotQ80x4 with the weight scale of a block put in X4
// by scale (MXFP4's E8M0; the others' f16 at 0(SI)).
func kdotQ80x4Scaled(name, l string, fr, wb int, setup, unpack, scale func()) {
	x4(name, fr)
	x4Zero()
	ones16(Y15)
	setup()
	blockLoop(l, func() {
		unpack()
		// the four scales d_w * d_x at tmp-16(SP)
		scale()
		VBROADCASTSS(X4, X4)
		MOVWLZX(Mem{Base: R8}, EAX)
		VMOVD(EAX, X5)
		for v := 1; v < 4; v++ {
			VPINSRW(U8(v), Mem{Base: xrows[v]}, X5, X5)
		}
		VCVTPH2PS(X5, X5)
		VMULPS(X4, X5, X5)
		VMOVUPS(X5, local(-16))
		VPSIGNB(Y13, Y13, Y12)
		for v, xr := range xrows {
			VMOVDQU(Mem{Base: xr, Disp: 2}, Y4)
			VPSIGNB(Y13, Y4, Y4)
			VPMADDUBSW(Y4, Y12, Y4)
			VPMADDWD(Y15, Y4, Y4)
			VCVTDQ2PS(Y4, Y4)
			VBROADCASTSS(local(-16+4*v), Y5)
			VFMADD231PS(Y4, Y5, ys[v])
		}
		x4Advance(wb, 34)
	})
	x4End(false)
}

// The unpack steps of kdotQ80x4: nibble weights (16 bytes at off(SI)) in
// Y13; Y14 = 0x0F bytes.
func x4Nibbles(off int) {
	nibbles(Mem{Base: RSI, Disp: off}, Y13, Y6, Y14)
}

func kdotQ8_0x4() {
	kdotQ80x4("dotQ8_0x4AVX2", "q80x4", 16, 34, func() {}, func() {
		VMOVDQU(Mem{Base: RSI, Disp: 2}, Y13)
	})
}

func kdotQ4_0x4() {
	kdotQ80x4("dotQ4_0x4AVX2", "q40x4", 48, 18, func() {
		splatD(0x0F0F0F0F, Y14)
		splatD(0x08080808, Y11)
		VMOVDQU(Y11, local(-48)) // 0x08 bytes
	}, func() {
		x4Nibbles(2)
		VPSUBB(local(-48), Y13, Y13)
	})
}

func kdotIQ4NLx4() {
	kdotQ80x4("dotIQ4NLx4AVX2", "iq4nlx4", 16, 18, func() {
		splatD(0x0F0F0F0F, Y14)
		VMOVDQU(iq4nlvals, Y11)
	}, func() {
		x4Nibbles(2)
		VPSHUFB(Y13, Y11, Y13)
	})
}

// kdotMXFP4x4 is dotIQ4NLx4AVX2 for MXFP4: its table of levels, its
// nibbles at 1(SI), its E8M0 scale.
func kdotMXFP4x4() {
	kdotQ80x4Scaled("dotMXFP4x4AVX2", "mxfp4x4", 16, 17, func() {
		splatD(0x0F0F0F0F, Y14)
		VMOVDQU(mxfp4vals, Y11)
	}, func() {
		x4Nibbles(1)
		VPSHUFB(Y13, Y11, Y13)
	}, func() { e8m0Half(Mem{Base: RSI}, X4) })
}

func kdotQ5_0x4() {
	kdotQ80x4("dotQ5_0x4AVX2", "q50x4", 16, 22, func() {
		splatD(0x0F0F0F0F, Y14)
	}, func() {
		x4Nibbles(6)
		// high bits: bytes_from_bits_32(qh) -> 0xF0 where the bit is 0
		MOVL(Mem{Base: RSI, Disp: 2}, EAX)
		VMOVD(EAX, X6)
		VPBROADCASTD(X6, Y6)
		VPSHUFB(bitsshuf, Y6, Y6)
		VPOR(bitsmask, Y6, Y6)
		VPCMPEQB(Y7, Y7, Y7)
		VPCMPEQB(Y7, Y6, Y6)
		splatD(0xF0F0F0F0, Y7)
		VPANDN(Y7, Y6, Y6)
		VPOR(Y6, Y13, Y13)
	})
}

// kdotQ45Kx4 generates dotQ4Kx4AVX2 and dotQ5Kx4AVX2: per group of 64 the
// weights are unpacked once (low nibbles Y12, high Y13, for Q5_K with the
// fifth bits of qh at 16(SI)) and used for all four vectors.
func kdotQ45Kx4(name, l string, q5 bool) {
	x4(name, 0)
	x4Zero()
	blockLoop(l, func() {
		// d and dmin of the weights as floats in X14, X15.
		f16(Mem{Base: RSI}, X14)
		f16(Mem{Base: RSI, Disp: 2}, X15)
		// unpack scales (AX) and mins (R12) as in dotQ4KAVX2
		kScales(R12, R13, R14, true)
		VMOVQ(R12, X4)
		VPMOVZXBW(X4, X4) // 8 int16 mins
		// mins term: Yv -= (y.d * dmin) * sum_j mins[j]*bsums(j)
		for v, xr := range xrows {
			VMOVDQU(Mem{Base: xr, Disp: 260}, X5)
			VPHADDW(Mem{Base: xr, Disp: 276}, X5, X5)
			VPMADDWD(X5, X4, X5)
			VCVTDQ2PS(Y5, Y5)
			VMULSS(Mem{Base: xr}, X15, X6)
			VBROADCASTSS(X6, Y6)
			VFNMADD231PS(Y5, Y6, ys[v])
		}
		VMOVQ(RAX, X4)
		VPMOVZXBW(X4, X4)
		VINSERTI128(U8(1), X4, Y4, Y4) // 8 int16 scales in both lanes
		splatD(0x0F0F0F0F, Y15)        // nibble mask (dmin no longer needed)
		x4ZeroSums()
		LEAQ(k4shuf, R13)
		qs, wb := 16, 144
		if q5 {
			qs, wb = 48, 176
		}
		for g := 0; g < 4; g++ {
			VMOVDQU(Mem{Base: RSI, Disp: qs + 32*g}, Y12)
			VPSRLW(U8(4), Y12, Y13)
			VPAND(Y15, Y12, Y12)
			VPAND(Y15, Y13, Y13)
			if q5 {
				for h, q := range []VecPhysical{Y12, Y13} {
					VMOVDQU(Mem{Base: RSI, Disp: 16}, Y5)
					if s := 2*g + h; s > 0 {
						VPSRLW(U8(s), Y5, Y5)
					}
					VPAND(m1bytes, Y5, Y5)
					VPSLLW(U8(4), Y5, Y5)
					VPOR(Y5, q, q)
				}
			}
			VPSHUFB(Mem{Base: R13, Disp: 64 * g}, Y4, Y6)
			VPSHUFB(Mem{Base: R13, Disp: 64*g + 32}, Y4, Y7)
			for v, xr := range xrows {
				VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*g}, Y12, Y5)
				VPMADDWD(Y6, Y5, Y5)
				VPADDD(Y5, ys[8+v], ys[8+v])
				VPMADDUBSW(Mem{Base: xr, Disp: 4 + 64*g + 32}, Y13, Y5)
				VPMADDWD(Y7, Y5, Y5)
				VPADDD(Y5, ys[8+v], ys[8+v])
			}
		}
		x4Fin()
		x4Advance(wb, 292)
	})
	x4End(false)
}

// kdotQ6Kx4 generates dotQ6Kx4AVX2: the 6-bit values are unpacked once per
// 128-element chunk; the -32 offset is applied per vector through the
// activations' block sums (32 * sum_k scale_k * bsum_k). Float accumulators
// live in the frame (acc0..acc3 at -128..-32), integer sums in Y0-Y3.
func kdotQ6Kx4() {
	x4("dotQ6Kx4AVX2", 128)
	VXORPS(Y12, Y12, Y12)
	for v := 0; v < 4; v++ {
		VMOVUPS(Y12, local(-128+32*v))
	}
	blockLoop("q6kx4", func() {
		for v := 0; v < 4; v++ {
			VPXOR(ys[v], ys[v], ys[v])
		}
		for c := 0; c < 2; c++ {
			// chunk c: unpack 128 six-bit values into Y8-Y11
			VMOVDQU(Mem{Base: RSI, Disp: 64 * c}, Y12)
			VMOVDQU(Mem{Base: RSI, Disp: 64*c + 32}, Y13)
			VMOVDQU(Mem{Base: RSI, Disp: 128 + 32*c}, Y14)
			for k := 0; k < 4; k++ {
				ql := ys[12+k%2]
				if k == 0 {
					VPAND(m2bytes, Y14, Y15)
				} else {
					VPSRLW(U8(2*k), Y14, Y15)
					VPAND(m2bytes, Y15, Y15)
				}
				VPSLLW(U8(4), Y15, Y15)
				if k >= 2 {
					VPSRLW(U8(4), ql, ql)
				}
				VPAND(m4bytes, ql, ys[8+k])
				VPOR(Y15, ys[8+k], ys[8+k])
			}
			// its eight scales as int16 pairs in Y4-Y7
			VMOVDQU(Mem{Base: RSI, Disp: 192}, X12)
			for k := 0; k < 4; k++ {
				VPSHUFB(q6shuf.Offset(64*c+16*k), X12, ys[4+k].AsX())
				VPMOVSXBW(ys[4+k].AsX(), ys[4+k])
			}
			for v, xr := range xrows {
				for k := 0; k < 4; k++ {
					VPMADDUBSW(Mem{Base: xr, Disp: 4 + 128*c + 32*k}, ys[8+k], Y13)
					VPMADDWD(ys[4+k], Y13, Y13)
					VPADDD(Y13, ys[v], ys[v])
				}
			}
		}
		// offset: sumi -= 32 * madd(scales16, bsums)
		VPMOVSXBW(Mem{Base: RSI, Disp: 192}, Y13)
		for v, xr := range xrows {
			VPMADDWD(Mem{Base: xr, Disp: 260}, Y13, Y12)
			VPSLLD(U8(5), Y12, Y12)
			VPSUBD(Y12, ys[v], ys[v])
		}
		f16(Mem{Base: RSI, Disp: 208}, X14)
		for v, xr := range xrows {
			VCVTDQ2PS(ys[v], ys[v])
			VMULSS(Mem{Base: xr}, X14, X15)
			VBROADCASTSS(X15, Y15)
			VMOVUPS(local(-128+32*v), Y12)
			VFMADD231PS(ys[v], Y15, Y12)
			VMOVUPS(Y12, local(-128+32*v))
		}
		x4Advance(210, 292)
	})
	x4End(true)
}

// x4Madd adds, for each vector v, the int16 pair sums of the unsigned bytes
// in q times its activations at disp(R8+v), weighted by the int16 scales in
// sc, to the int32 lanes of Y8+v (tmp: scratch).
func x4Madd(q VecPhysical, disp int, sc, tmp VecPhysical) {
	for v, xr := range xrows {
		VPMADDUBSW(Mem{Base: xr, Disp: disp}, q, tmp)
		VPMADDWD(sc, tmp, tmp)
		VPADDD(tmp, ys[8+v], ys[8+v])
	}
}

// kdotQ2Kx4 generates dotQ2Kx4AVX2: 2-bit values and scales are unpacked
// once per group of 32 and used for all four vectors.
func kdotQ2Kx4() {
	x4("dotQ2Kx4AVX2", 0)
	x4Zero()
	LEAQ(q3shuf, R13)
	blockLoop("q2kx4", func() {
		// mins (high nibbles of scales) times each vector's bsums, times dmin*y.d
		VMOVDQU(Mem{Base: RSI}, X12)
		VPSRLW(U8(4), X12, X7)
		VPAND(m4bytes, X7, X7)
		VPMOVZXBW(X7, Y7)
		f16(Mem{Base: RSI, Disp: 82}, X14) // dmin
		for v, xr := range xrows {
			VPMADDWD(Mem{Base: xr, Disp: 260}, Y7, Y4)
			VCVTDQ2PS(Y4, Y4)
			VMULSS(Mem{Base: xr}, X14, X5)
			VBROADCASTSS(X5, Y5)
			VFNMADD231PS(Y4, Y5, ys[v])
		}
		// scales (low nibbles) as int16, both 128-bit halves replicated
		VPAND(m4bytes, X12, X12)
		VPMOVZXBW(X12, Y12)
		VEXTRACTI128(U8(1), Y12, X13)
		VINSERTI128(U8(1), X13, Y13, Y13)
		VINSERTI128(U8(1), X12, Y12, Y12)
		f16(Mem{Base: RSI, Disp: 80}, X14) // d
		x4ZeroSums()
		// two halves of 32 qs bytes, four 2-bit planes each
		for h, sc := range []VecPhysical{Y12, Y13} {
			VMOVDQU(Mem{Base: RSI, Disp: 16 + 32*h}, Y15)
			for j := 0; j < 4; j++ {
				VPSRLW(U8(2*j), Y15, Y6)
				VPAND(m2bytes, Y6, Y6)
				VPSHUFB(Mem{Base: R13, Disp: 32 * j}, sc, Y7)
				x4Madd(Y6, 4+128*h+32*j, Y7, Y4)
			}
		}
		x4Fin()
		x4Advance(84, 292)
	})
	x4End(false)
}

// kdotQ3Kx4 generates dotQ3Kx4AVX2 (signed 3-bit values: VPSIGNB moves
// their signs onto the activations).
func kdotQ3Kx4() {
	x4("dotQ3Kx4AVX2", 0)
	x4Zero()
	LEAQ(q3shuf, R13)
	blockLoop("q3kx4", func() {
		// scales, as in dotQ3KAVX2
		q3Scales(R14, RDI, R12)
		VMOVQ(R14, X12)
		VPINSRQ(U8(1), RAX, X12, X12)
		splatD(0x20202020, X4)
		VPSUBB(X4, X12, X12)
		VPMOVSXBW(X12, Y12)
		VEXTRACTI128(U8(1), Y12, X13)
		VINSERTI128(U8(1), X13, Y13, Y13)
		VINSERTI128(U8(1), X12, Y12, Y12)
		VMOVDQU(Mem{Base: RSI}, Y15)
		VPCMPEQB(Y4, Y4, Y4)
		VPXOR(Y4, Y15, Y15) // ~hmask
		x4ZeroSums()
		for h, sc := range []VecPhysical{Y12, Y13} {
			for j := 0; j < 4; j++ {
				VMOVDQU(Mem{Base: RSI, Disp: 32 + 32*h}, Y4)
				VPSRLW(U8(2*j), Y4, Y6)
				VPAND(m2bytes, Y6, Y6)
				VPSRLW(U8(4*h+j), Y15, Y7)
				VPAND(m1bytes, Y7, Y7)
				VPSLLW(U8(2), Y7, Y7)
				VPSUBB(Y7, Y6, Y6)  // signed value in [-4, 3]
				VPSIGNB(Y6, Y6, Y7) // |value|
				VPSHUFB(Mem{Base: R13, Disp: 32 * j}, sc, Y14)
				for v, xr := range xrows {
					VMOVDQU(Mem{Base: xr, Disp: 4 + 128*h + 32*j}, Y4)
					VPSIGNB(Y6, Y4, Y4)
					VPMADDUBSW(Y4, Y7, Y4)
					VPMADDWD(Y14, Y4, Y4)
					VPADDD(Y4, ys[8+v], ys[8+v])
				}
			}
		}
		f16(Mem{Base: RSI, Disp: 108}, X14) // d
		x4Fin()
		x4Advance(110, 292)
	})
	x4End(false)
}

// kdotIQ4XSx4 generates dotIQ4XSx4AVX2: the eight sub-blocks unrolled.
func kdotIQ4XSx4() {
	x4("dotIQ4XSx4AVX2", 0)
	x4Zero()
	VMOVDQU(iq4nlvals, Y12)
	splatD(0x0F0F0F0F, Y13)
	blockLoop("iq4xsx4", func() {
		MOVWLZX(Mem{Base: RSI, Disp: 2}, R12L) // scales_h
		MOVL(Mem{Base: RSI, Disp: 4}, R13L)    // scales_l
		x4ZeroSums()
		for ib := 0; ib < 8; ib++ {
			iq4xsScale(R13, R12)
			nibbles(Mem{Base: RSI, Disp: 8 + 16*ib}, Y6, Y7, Y13)
			VPSHUFB(Y6, Y12, Y6)
			VPSIGNB(Y6, Y6, Y4)
			for v, xr := range xrows {
				VMOVDQU(Mem{Base: xr, Disp: 4 + 32*ib}, Y7)
				VPSIGNB(Y6, Y7, Y7)
				VPMADDUBSW(Y7, Y4, Y7)
				VPMADDWD(Y5, Y7, Y7)
				VPADDD(Y7, ys[8+v], ys[8+v])
			}
		}
		f16(Mem{Base: RSI}, X14)
		x4Fin()
		x4Advance(136, 292)
	})
	x4End(false)
}

// kcvtF16ToF32 generates cvtF16ToF32AVX2(dst *float32, src *uint16, n int):
// n must be a multiple of 8.
func kcvtF16ToF32() {
	TEXT("cvtF16ToF32AVX2", NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Pragma("noescape")
	Load(Param("dst"), RDI)
	Load(Param("src"), RSI)
	Load(Param("n"), RCX)
	XORQ(RBX, RBX)
	Label("cvt16loop")
	CMPQ(RBX, RCX)
	JGE(LabelRef("cvt16done"))
	VCVTPH2PS(Mem{Base: RSI, Index: RBX, Scale: 2}, Y0)
	VMOVUPS(Y0, Mem{Base: RDI, Index: RBX, Scale: 4})
	ADDQ(U8(8), RBX)
	JMP(LabelRef("cvt16loop"))
	Label("cvt16done")
	VZEROUPPER()
	RET()
}

// kcvtF32ToF16 generates cvtF32ToF16AVX2(dst *uint16, src *float32, n int):
// n must be a multiple of 8. Rounds to nearest even (imm 0).
func kcvtF32ToF16() {
	TEXT("cvtF32ToF16AVX2", NOSPLIT, "func(dst *uint16, src *float32, n int)")
	Pragma("noescape")
	Load(Param("dst"), RDI)
	Load(Param("src"), RSI)
	Load(Param("n"), RCX)
	XORQ(RBX, RBX)
	Label("cvt32loop")
	CMPQ(RBX, RCX)
	JGE(LabelRef("cvt32done"))
	VMOVUPS(Mem{Base: RSI, Index: RBX, Scale: 4}, Y0)
	VCVTPS2PH(U8(0), Y0, X1)
	VMOVDQU(X1, Mem{Base: RDI, Index: RBX, Scale: 2})
	ADDQ(U8(8), RBX)
	JMP(LabelRef("cvt32loop"))
	Label("cvt32done")
	VZEROUPPER()
	RET()
}
