// Command asm generates model/quant's amd64 assembly with avo, one file per
// run (-kernels):
//
//   - vnni (the default): the AVX-512 VNNI batch kernels and the other
//     AVX-512 kernels, dot_vnni_amd64.s and dot_vnni_amd64_stubs.go (this
//     file);
//   - avx2: the AVX2/FMA/F16C single- and four-vector dot kernels and the
//     F16<->F32 conversions, dot_avx2_amd64.s and dot_avx2_amd64_stubs.go
//     (avx2.go).
//
// Run it through `go generate ./model/quant` (see the go:generate lines in
// dot_amd64.go); it lives in its own module so the main module does not
// depend on avo.
//
// The VNNI kernels multiply one weight row with NV (4 or 8) activation rows and
// perform, for every vector, exactly the float operations of the AVX2
// single-vector kernel of the type (same eight int32 lanes per block, same
// per-block FMAs into eight float lanes, same ggml hsum order), so results
// are bit-identical to it; only the integer work changes. Two vectors share a
// 512-bit register: lanes 0-7 hold vector 2p's eight lanes, lanes 8-15 vector
// 2p+1's, and each float instruction does the work of two AVX2 ones.
//
// The sixteen-row kernels of repacked Q4_0, Q4_K, Q5_K and Q6_K (q40r16,
// q4kr16, q6kr16 in q6k.go) are the exception: they have float contracts
// of their own (one or two FMAs per row, vector and block; see
// gemmQ4_0R16Generic, gemmQ4KR16Generic, gemmQ5KR16Generic and
// gemmQ6KR16Generic in model/quant).
//
// avo v0.5.0 has no AVX-512 VNNI instructions, so VPDPBUSD is emitted raw.
package main

import (
	"flag"
	"fmt"
	"math"
	"os"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

func vpdpbusd(s8, u8, acc Op) {
	Instruction(&ir.Instruction{Opcode: "VPDPBUSD", Operands: []Op{s8, u8, acc}})
}

func vpdpwssd(a, b, acc Op) {
	Instruction(&ir.Instruction{Opcode: "VPDPWSSD", Operands: []Op{a, b, acc}})
}

var (
	midx    Mem // mins lanes: [0 1 2 3 0 0 0 0 4 5 6 7 0 0 0 0]
	scshuf  Mem // per group g: 16 bytes [2g x8, 2g+1 x8]
	nibsh   Mem // 16 words 0, then 16 words 4 (VPSRLVW counts)
	q4sh    Mem // words: 0 in 128-bit lanes 0 and 2, 4 in lanes 1 and 3
	b0F     Mem // 0x0F bytes
	b08     Mem // 0x08 bytes
	b10     Mem // 0x10 bytes
	b80     Mem // 0x80 bytes
	b3F     Mem // 0x3F bytes
	b03     Mem // 0x03 bytes
	r8idx   Mem // per row pair p: 16 dwords [2p x8, 2p+1 x8] (VPERMPS indexes)
	bFF     Mem // 0x000000FF dwords
	k4mshuf Mem // per byte t (0-3) of a dword: 64 bytes of VPSHUFB indexes giving every dword (byte t, byte t) as two words
)

func consts() {
	midx = GLOBL("vnnimidx", RODATA|NOPTR)
	for l, v := range []uint32{0, 1, 2, 3, 0, 0, 0, 0, 4, 5, 6, 7, 0, 0, 0, 0} {
		DATA(4*l, U32(v))
	}
	scshuf = GLOBL("vnniscshuf", RODATA|NOPTR)
	for g := 0; g < 4; g++ {
		for l := 0; l < 16; l++ {
			DATA(16*g+l, U8(2*g+l/8))
		}
	}
	nibsh = GLOBL("vnninibsh", RODATA|NOPTR)
	for l := 0; l < 32; l++ {
		DATA(2*l, U16(4*(l/16)))
	}
	q4sh = GLOBL("vnniq4sh", RODATA|NOPTR)
	for l := 0; l < 32; l++ {
		DATA(2*l, U16(4*((l/8)%2)))
	}
	b0F = splat("vnnib0f", 0x0F0F0F0F)
	b08 = splat("vnnib08", 0x08080808)
	b10 = splat("vnnib10", 0x10101010)
	b80 = splat("vnnib80", 0x80808080)
	b3F = splat("vnnib3f", 0x3F3F3F3F)
	b03 = splat("vnnib03", 0x03030303)
	bFF = splat("vnnibff", 0xFF)
	k4mshuf = table("vnnik4mshuf", 4*64, 1, func(i int) uint32 {
		t, d, b := i/64, (i/4)%4, i%4
		if b%2 == 1 {
			return 0x80
		}
		return uint32(4*d + t)
	})
	r8idx = table("vnnir8idx", 4*16, 4, func(i int) uint32 { p, l := i/16, i%16; return uint32(2*p + l/8) })
}

// table declares read-only data of n entries of width bytes (1, 2 or 4),
// entry i holding v(i).
func table(name string, n, width int, v func(i int) uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < n; i++ {
		switch width {
		case 1:
			DATA(i, U8(v(i)))
		case 2:
			DATA(2*i, U16(v(i)))
		default:
			DATA(4*i, U32(v(i)))
		}
	}
	return m
}

// splat declares 64 bytes of read-only data holding v in every dword.
func splat(name string, v uint32) Mem {
	m := GLOBL(name, RODATA|NOPTR)
	for l := 0; l < 16; l++ {
		DATA(4*l, U32(v))
	}
	return m
}

// xaddr addresses byte disp of activation vector v: R8 = x, R9 = stride,
// R10 = x+3*stride, R11 = x+6*stride; for vectors 8-15 the three bases are
// moved on by DI = 8*stride first (pairStart).
func xaddr(v, disp int) Mem {
	m := xbases[v%8]
	m.Disp = disp
	return m
}

var xbases = [8]Mem{
	{Base: R8}, {Base: R8, Index: R9, Scale: 1}, {Base: R8, Index: R9, Scale: 2},
	{Base: R10}, {Base: R8, Index: R9, Scale: 4}, {Base: R10, Index: R9, Scale: 2},
	{Base: R11}, {Base: R11, Index: R9, Scale: 1},
}

var accs = []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7}

// pairStart moves the activation bases to vectors 8-15 before pair 4, and
// back after the last pair.
func pairStart(nv, p int) {
	if nv > 8 && p == 4 {
		ADDQ(RDI, R8)
		ADDQ(RDI, R10)
		ADDQ(RDI, R11)
	}
}

func pairsEnd(nv int) {
	if nv > 8 {
		SUBQ(RDI, R8)
		SUBQ(RDI, R10)
		SUBQ(RDI, R11)
	}
}

// header declares a kernel of signature sig (nb, w, x, xstride, out) and
// loads its arguments: CX = nb, SI = w, R8 = x, R9 = xstride, R10 =
// x+3*xstride.
func header(name, sig string) {
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Load(Param("nb"), RCX)
	Load(Param("w"), RSI)
	Load(Param("x"), R8)
	Load(Param("xstride"), R9)
	LEAQ(Mem{Base: R8, Index: R9, Scale: 2}, R10)
	ADDQ(R9, R10)
}

func prologue(name string, nv int) {
	header(name, fmt.Sprintf("func(nb int, w, x *byte, xstride int, out *[%d]float32)", nv))
	if nv > 4 {
		LEAQ(Mem{Base: R10, Index: R9, Scale: 2}, R11)
		ADDQ(R9, R11)
	}
	if nv > 8 {
		MOVQ(R9, RDI)
		SHLQ(U8(3), RDI)
	}
	for p := 0; p < nv/2; p++ {
		VPXORD(accs[p], accs[p], accs[p])
	}
}

// f16Bcast converts the f16 at SI+off to float32 in every lane of dst
// (tmp: a register below X16).
func f16Bcast(off int, tmp, dst VecPhysical) {
	MOVWLZX(Mem{Base: RSI, Disp: off}, EAX)
	VMOVD(EAX, tmp.AsX())
	VCVTPH2PS(tmp.AsX(), tmp.AsX())
	VBROADCASTSS(tmp.AsX(), dst)
}

// kmask sets the 16-bit opmask k to v.
func kmask(k Register, v uint32) {
	MOVL(U32(v), EAX)
	KMOVW(EAX, k)
}

// loopStart and loopEnd bracket a loop over the CX blocks.
func loopStart(name string) {
	TESTQ(RCX, RCX)
	JEQ(LabelRef(name + "done"))
	Label(name + "loop")
}

func loopEnd(name string) {
	DECQ(RCX)
	JNZ(LabelRef(name + "loop"))
	Label(name + "done")
}

func advance(nv, wb, xb int) {
	ADDQ(U32(wb), RSI)
	ADDQ(U32(xb), R8)
	ADDQ(U32(xb), R10)
	if nv > 4 {
		ADDQ(U32(xb), R11)
	}
}

// hsum8 adds the eight floats of y (x: its low half) in ggml's
// hsum_float_8 order, as the AVX2 HSUM8 macro, into lane 0 of s; t is
// clobbered.
func hsum8(y, x, s, t Register) {
	VEXTRACTF128(U8(1), y, s)
	VADDPS(x, s, s)
	VMOVHLPS(s, s, t)
	VADDPS(t, s, s)
	VMOVSHDUP(s, t)
	VADDSS(t, s, s)
}

// hsumStore is hsum8 stored to disp(DX); clobbers X13, X14.
func hsumStore(y, x Register, disp int) {
	hsum8(y, x, X13, X14)
	VMOVSS(X13, Mem{Base: RDX, Disp: disp})
}

// epilogue reduces every vector's eight lanes in ggml's hsum_float_8 order
// (as the AVX2 HSUM8 macro) and stores them to out.
func epilogue(nv int) {
	Load(Param("out"), RDX)
	for p := 0; p < nv/2; p++ {
		for h := 0; h < 2; h++ {
			y := accs[p].AsY()
			x := accs[p].AsX()
			if h == 1 {
				VEXTRACTF64X4(U8(1), accs[p], Y15)
				y, x = Y15, X15
			}
			hsumStore(y, x, 4*(2*p+h))
		}
	}
	VZEROUPPER()
	RET()
}

// q80 generates the Q8_0 (q4 = false) or Q4_0 (q4 = true) kernel: weight
// blocks of 34 or 18 bytes against Q8_0 activation blocks (34 bytes).
func q80(name string, nv int, q4 bool) {
	wb := 34
	if q4 {
		wb = 18
	}
	prologue(name, nv)
	Comment("Z11 = 0; Z12 = 0x0F bytes; Z13 = 0x08 bytes; Z14 = nibble shifts")
	VPXORD(Z11, Z11, Z11)
	kmask(K4, 0xFF00)
	if q4 {
		VMOVDQU32(b0F, Z12)
		VMOVDQU32(b08, Z13)
		VMOVDQU32(q4sh, Z14)
	}
	loopStart(name)
	Comment("Z15 = d_w in every lane")
	f16Bcast(0, Z15, Z15)
	Comment("Z16 = the 32 signed weights in both halves, Z17 = |w|, K1 = w < 0")
	if q4 {
		VBROADCASTI32X4(Mem{Base: RSI, Disp: 2}, Z16)
		VPSRLVW(Z14, Z16, Z16)
		VPANDD(Z12, Z16, Z16)
		VPSUBB(Z13, Z16, Z16)
	} else {
		VBROADCASTI64X4(Mem{Base: RSI, Disp: 2}, Z16)
	}
	VPABSB(Z16, Z17)
	VPMOVB2M(Z16, K1)
	for p := 0; p < nv/2; p++ {
		pairStart(nv, p)
		a, b := 2*p, 2*p+1
		VMOVDQU(xaddr(a, 2), Y8)
		VINSERTI64X4(U8(1), xaddr(b, 2), Z8, Z8)
		VPSUBB(Z8, Z11, K1, Z8) // x = -x where w < 0 (VPSIGNB)
		VPXORD(Z9, Z9, Z9)
		vpdpbusd(Z8, Z17, Z9)
		VCVTDQ2PS(Z9, Z9)
		// Z10 = [d_x(a)*d_w x8, d_x(b)*d_w x8]
		VPBROADCASTW(xaddr(a, 0), Y10)
		VPBROADCASTW(xaddr(b, 0), K4, Y10)
		VCVTPH2PS(Y10, Z10)
		VMULPS(Z15, Z10, Z10)
		VFMADD231PS(Z9, Z10, accs[p])
	}
	pairsEnd(nv)
	advance(nv, wb, 34)
	loopEnd(name)
	epilogue(nv)
}

// q4k generates the Q4_K kernel (144-byte weight blocks, 292-byte Q8_K
// activation blocks: d float32, qs[256], bsums[16] int16).
func q4k(name string, nv int) {
	prologue(name, nv)
	VMOVDQU32(nibsh, Z24)
	VMOVDQU32(b0F, Z25)
	VMOVDQU32(midx, Z26)
	kmask(K2, 0x0F0F)
	kmask(K4, 0xFF00)
	loopStart(name)
	Comment("Z30 = d, Z31 = dmin in every lane")
	f16Bcast(0, Z14, Z30)
	f16Bcast(2, Z15, Z31)
	unpackQ4KScales()
	Comment("Y12 = 8 int16 mins in both lanes; Z16-Z19 = int32 scales of sub-blocks 2g, 2g+1")
	VMOVQ(R12, X12)
	VPMOVZXBW(X12, X12)
	VINSERTI128(U8(1), X12, Y12, Y12)
	VMOVQ(RAX, X13)
	scs := []VecPhysical{Z16, Z17, Z18, Z19}
	for g := 0; g < 4; g++ {
		VPSHUFB(scshuf.Offset(16*g), X13, X14)
		VPMOVZXBD(X14, scs[g])
	}
	Comment("Z20-Z23 = nibbles of sub-blocks 2g (low half) and 2g+1 (high half)")
	ws := []VecPhysical{Z20, Z21, Z22, Z23}
	for g := 0; g < 4; g++ {
		VBROADCASTI64X4(Mem{Base: RSI, Disp: 16 + 32*g}, ws[g])
		VPSRLVW(Z24, ws[g], ws[g])
		VPANDD(Z25, ws[g], ws[g])
	}
	ta := []VecPhysical{Z8, Z9, Z10, Z11}
	tb := []VecPhysical{Z14, Z15, Z9, Z10} // Z9, Z10 are free once ta is summed
	for p := 0; p < nv/2; p++ {
		pairStart(nv, p)
		a, b := 2*p, 2*p+1
		Comment(fmt.Sprintf("vectors %d and %d: mins term first", a, b))
		VMOVDQU(xaddr(a, 260), X14)
		VINSERTI128(U8(1), xaddr(b, 260), Y14, Y14)
		VMOVDQU(xaddr(a, 276), X15)
		VINSERTI128(U8(1), xaddr(b, 276), Y15, Y15)
		VPHADDW(Y15, Y14, Y14)
		VPMADDWD(Y12, Y14, Y14)
		VPERMD_Z(Z14, Z26, K2, Z29)
		VCVTDQ2PS(Z29, Z29)
		// Z27 = [y.d(a) x8, y.d(b) x8]; Z28 = Z27 * dmin
		VBROADCASTSS(xaddr(a, 0), Z27)
		VBROADCASTSS(xaddr(b, 0), K4, Z27)
		VMULPS(Z31, Z27, Z28)
		VFNMADD231PS(Z29, Z28, accs[p])
		for i, v := range []int{a, b} {
			t := ta
			if i == 1 {
				t = tb
			}
			for g := 0; g < 4; g++ {
				VPXORD(t[g], t[g], t[g])
				vpdpbusd(xaddr(v, 4+64*g), ws[g], t[g])
			}
			// Each lane of t[g] is a sum of four products |.| <= 15*128*4,
			// so it is its own sign-extended low word: VPMADDWD with the
			// zero-extended scale dwords multiplies it by the scale.
			VPMADDWD(scs[0], t[0], t[0])
			for g := 1; g < 4; g++ {
				vpdpwssd(scs[g], t[g], t[0])
			}
		}
		VSHUFI64X2(U8(0x44), tb[0], ta[0], Z13)
		VSHUFI64X2(U8(0xEE), tb[0], ta[0], Z14)
		VPADDD(Z14, Z13, Z13)
		VCVTDQ2PS(Z13, Z13)
		VMULPS(Z30, Z27, Z28)
		VFMADD231PS(Z13, Z28, accs[p])
	}
	pairsEnd(nv)
	advance(nv, 144, 292)
	loopEnd(name)
	epilogue(nv)
}

// q4k1 generates the single-vector Q4_K kernel: the integer sums of a block
// as in q4k (VPDPBUSD on 64 bytes, scales with VPMADDWD/VPDPWSSD, folded to
// dotQ4KAVX2's eight lanes), the float operations exactly those of dotQ4KAVX2.
// unpackQ4KScales leaves the eight 6-bit scales of the Q4_K block at SI in
// AX and its eight mins in R12, one per byte (dotQ4KAVX2's unpacking);
// clobbers BX, DX, R13, R14.
func unpackQ4KScales() {
	Comment("unpack scales (AX) and mins (R12) as in dotQ4KAVX2")
	MOVL(Mem{Base: RSI, Disp: 4}, EAX)
	MOVL(Mem{Base: RSI, Disp: 8}, EBX)
	MOVL(Mem{Base: RSI, Disp: 12}, EDX)
	MOVL(EDX, R12L)
	SHRL(U8(4), R12L)
	ANDL(U32(0x0f0f0f0f), R12L)
	MOVL(EBX, R13L)
	SHRL(U8(6), R13L)
	ANDL(U32(0x03030303), R13L)
	SHLL(U8(4), R13L)
	ORL(R13L, R12L)
	MOVL(EBX, R14L)
	ANDL(U32(0x3f3f3f3f), R14L)
	ANDL(U32(0x0f0f0f0f), EDX)
	MOVL(EAX, R13L)
	SHRL(U8(6), R13L)
	ANDL(U32(0x03030303), R13L)
	SHLL(U8(4), R13L)
	ORL(R13L, EDX)
	ANDL(U32(0x3f3f3f3f), EAX)
	SHLQ(U8(32), RDX)
	ORQ(RDX, RAX)
	SHLQ(U8(32), R12)
	ORQ(R14, R12)
}

func q4k1(name string) {
	TEXT(name, NOSPLIT, "func(nb int, w, x *byte) float32")
	Pragma("noescape")
	Load(Param("nb"), RCX)
	Load(Param("w"), RSI)
	Load(Param("x"), RDI)
	VXORPS(Y0, Y0, Y0)
	VMOVDQU32(nibsh, Z24)
	VMOVDQU32(b0F, Z25)
	loopStart(name)
	Comment("X1 = d * y.d, X2 = dmin * y.d")
	MOVWLZX(Mem{Base: RSI}, EAX)
	MOVWLZX(Mem{Base: RSI, Disp: 2}, EBX)
	VMOVD(EAX, X1)
	VMOVD(EBX, X2)
	VCVTPH2PS(X1, X1)
	VCVTPH2PS(X2, X2)
	VMOVSS(Mem{Base: RDI}, X3)
	VMULSS(X3, X1, X1)
	VMULSS(X3, X2, X2)
	unpackQ4KScales()
	Comment("mins term, as dotQ4KAVX2")
	VMOVQ(R12, X5)
	VPMOVZXBW(X5, X5)
	VMOVDQU(Mem{Base: RDI, Disp: 260}, X6)
	VPHADDW(Mem{Base: RDI, Disp: 276}, X6, X6)
	VPMADDWD(X6, X5, X5)
	VCVTDQ2PS(Y5, Y5)
	VBROADCASTSS(X2, Y2)
	VFNMADD231PS(Y5, Y2, Y0)
	VMOVQ(RAX, X7)
	scs := []VecPhysical{Z16, Z17, Z18, Z19}
	for g := 0; g < 4; g++ {
		VPSHUFB(scshuf.Offset(16*g), X7, X4)
		VPMOVZXBD(X4, scs[g])
	}
	ws := []VecPhysical{Z20, Z21, Z22, Z23}
	t := []VecPhysical{Z8, Z9, Z10, Z11}
	for g := 0; g < 4; g++ {
		VBROADCASTI64X4(Mem{Base: RSI, Disp: 16 + 32*g}, ws[g])
		VPSRLVW(Z24, ws[g], ws[g])
		VPANDD(Z25, ws[g], ws[g])
		VPXORD(t[g], t[g], t[g])
		vpdpbusd(Mem{Base: RDI, Disp: 4 + 64*g}, ws[g], t[g])
	}
	VPMADDWD(scs[0], t[0], t[0])
	for g := 1; g < 4; g++ {
		vpdpwssd(scs[g], t[g], t[0])
	}
	VEXTRACTI64X4(U8(1), Z8, Y9)
	VPADDD(Y9, Y8, Y8)
	VCVTDQ2PS(Y8, Y8)
	VBROADCASTSS(X1, Y1)
	VFMADD231PS(Y8, Y1, Y0)
	ADDQ(U32(144), RSI)
	ADDQ(U32(292), RDI)
	loopEnd(name)
	hsum8(Y0, X0, X5, X6)
	VZEROUPPER()
	Store(X5, ReturnIndex(0))
	RET()
}

// quantQ8K generates quantQ8KAVX512(x *float32, dst *byte) bool: one block
// of 256 floats to Q8_K exactly as quantizeRowQ8K (same max search, the same
// float32 divisions, nearestInt's 1.5*2^23 addition, clamp to 127, int8
// truncation, exact int16 bsums). It returns false, writing nothing, when
// amax is 0 or a value is not finite: the Go code handles those blocks.
func quantQ8K() {
	TEXT("quantQ8KAVX512", NOSPLIT, "func(x *float32, dst *byte) bool")
	Pragma("noescape")
	Load(Param("x"), RSI)
	Load(Param("dst"), RDI)
	c := func(name string, v uint32) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		DATA(0, U32(v))
		return m
	}
	absMask := c("q8kabs", 0x7fffffff)
	minus127 := c("q8km127", 0xc2fe0000) // -127.0
	one := c("q8kone", 0x3f800000)
	magic := c("q8kmagic", 0x4b400000) // 12582912.0
	mant := c("q8kmant", 0x007fffff)
	half := c("q8khalf", 0x00400000)
	i127 := c("q8k127", 127)
	b80 := c("q8kb80", 0x80808080)
	w2048 := c("q8kw2048", 0x08000800)
	z := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15}
	t := []VecPhysical{Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23}
	VPBROADCASTD(absMask, Z31)
	Comment("Z0-Z15 = |x| as bits (ordered like the floats); Z16 = their maximum")
	for i := 0; i < 16; i++ {
		VPANDD(Mem{Base: RSI, Disp: 64 * i}, Z31, z[i])
	}
	for i := 0; i < 8; i++ {
		VPMAXUD(z[2*i+1], z[2*i], t[i])
	}
	for n := 4; n >= 1; n /= 2 {
		for i := 0; i < n; i++ {
			VPMAXUD(t[2*i+1], t[2*i], t[i])
		}
	}
	reduce16(Z16, Z17, func(a, b, c Op) { VPMAXUD(a, b, c) })
	VMOVD(X16, EAX)
	TESTL(EAX, EAX)
	JEQ(LabelRef("q8kfail"))
	CMPL(EAX, U32(0x7f800000))
	JAE(LabelRef("q8kfail"))
	VPBROADCASTD(X16, Z16)
	Comment("AX = index of the first x with |x| = amax")
	for i := 0; i < 16; i++ {
		VPCMPEQD(Z16, z[i], K1)
		KMOVW(K1, EAX)
		TESTL(EAX, EAX)
		JEQ(LabelRef(fmt.Sprintf("q8knot%d", i)))
		BSFL(EAX, EAX)
		if i > 0 {
			ADDL(U32(16*i), EAX)
		}
		JMP(LabelRef("q8kfound"))
		Label(fmt.Sprintf("q8knot%d", i))
	}
	Label("q8kfail")
	XORL(EAX, EAX)
	Store(AL, ReturnIndex(0))
	VZEROUPPER()
	RET()
	Label("q8kfound")
	Comment("X1 = iscale = -127/max; d = 1/iscale")
	VMOVSS(Mem{Base: RSI, Index: RAX, Scale: 4}, X0)
	VMOVSS(minus127, X1)
	VDIVSS(X0, X1, X1)
	VMOVSS(one, X2)
	VDIVSS(X1, X2, X2)
	VMOVSS(X2, Mem{Base: RDI})
	VBROADCASTSS(X1, Z1)
	VPBROADCASTD(magic, Z2)
	VPBROADCASTD(mant, Z3)
	VPBROADCASTD(half, Z4)
	VPBROADCASTD(i127, Z5)
	Comment("q = min(nearestInt(iscale*x), 127), stored as int8")
	for i := 0; i < 16; i++ {
		VMULPS(Mem{Base: RSI, Disp: 64 * i}, Z1, Z6)
		VADDPS(Z2, Z6, Z6)
		VPANDD(Z3, Z6, Z6)
		VPSUBD(Z4, Z6, Z6)
		VPMINSD(Z5, Z6, Z6)
		VPMOVDB(Z6, Mem{Base: RDI, Disp: 4 + 16*i})
	}
	Comment("bsums: byte sums of q+128 per 8 (VPSADBW), pairs added, minus 2048")
	VPBROADCASTD(b80, Z8)
	VPXORD(Z9, Z9, Z9)
	xs := []VecPhysical{X10, X11}
	for h := 0; h < 2; h++ {
		for k := 0; k < 2; k++ {
			VPXORD(Mem{Base: RDI, Disp: 4 + 128*h + 64*k}, Z8, Z6)
			VPSADBW(Z9, Z6, Z6)
			VPMOVQW(Z6, xs[k])
		}
		VPHADDW(X11, X10, X12)
		VPBROADCASTD(w2048, X13)
		VPSUBW(X13, X12, X12)
		VMOVDQU(X12, Mem{Base: RDI, Disp: 260 + 16*h})
	}
	MOVL(U32(1), EAX)
	Store(AL, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// reduce16 folds the sixteen dwords of z with op (a commutative dword
// operation: VPMAXUD, VPADDD) into lane 0 of z; t is clobbered.
func reduce16(z, t VecPhysical, op func(a, b, c Op)) {
	VEXTRACTI64X4(U8(1), z, t.AsY())
	op(t.AsY(), z.AsY(), z.AsY())
	VEXTRACTI32X4(U8(1), z.AsY(), t.AsX())
	op(t.AsX(), z.AsX(), z.AsX())
	VPSHUFD(U8(0x4E), z.AsX(), t.AsX())
	op(t.AsX(), z.AsX(), z.AsX())
	VPSHUFD(U8(0xB1), z.AsX(), t.AsX())
	op(t.AsX(), z.AsX(), z.AsX())
}

// quantQ80 generates an AVX-512 quantiser of one Q8_0 block (32 floats at
// x) with exactly quantizeRowQ8_0's arithmetic: amax over |x| (as bits),
// d = amax/127 stored as f16 (VCVTPS2PH rounds to nearest even, as
// F32ToF16), id = 127/amax, q = nearestInt(x*id) by the 1.5*2^23 trick. With
// sums it writes the repacked Q4_0 kernel's 40-byte block instead of the
// 34-byte Q8_0 one: int32 -8*sum(q), float32 d (the f16 converted back),
// then q. It returns false, having written nothing, when amax is 0 or not
// finite, or 127/amax is not: the Go code handles those blocks.
func quantQ80(name string, sums bool) {
	TEXT(name, NOSPLIT, "func(x *float32, dst *byte) bool")
	Pragma("noescape")
	Load(Param("x"), RSI)
	Load(Param("dst"), RDI)
	c := func(v uint32) Mem {
		m := GLOBL(fmt.Sprintf("%sc%x", name, v), RODATA|NOPTR)
		DATA(0, U32(v))
		return m
	}
	VMOVUPS(Mem{Base: RSI}, Z0)
	VMOVUPS(Mem{Base: RSI, Disp: 64}, Z1)
	VPBROADCASTD(c(0x7fffffff), Z31)
	Comment("X2 = amax as bits")
	VPANDD(Z31, Z0, Z2)
	VPANDD(Z31, Z1, Z3)
	VPMAXUD(Z3, Z2, Z2)
	reduce16(Z2, Z3, func(a, b, c Op) { VPMAXUD(a, b, c) })
	VMOVD(X2, EAX)
	TESTL(EAX, EAX)
	JEQ(LabelRef(name + "fail"))
	CMPL(EAX, U32(0x7f800000))
	JAE(LabelRef(name + "fail"))
	Comment("X4 = d = amax/127 as f16; X5 = id = 127/amax")
	VMOVSS(c(0x42fe0000), X6) // 127.0
	VDIVSS(X6, X2, X4)
	VCVTPS2PH(U8(0), X4, X4)
	VDIVSS(X2, X6, X5)
	Comment("an amax so small that id overflows is the Go code's too")
	VMOVD(X5, EAX)
	CMPL(EAX, U32(0x7f800000))
	JAE(LabelRef(name + "fail"))
	VBROADCASTSS(X5, Z5)
	VPBROADCASTD(c(0x4b400000), Z2) // 12582912.0
	VPBROADCASTD(c(0x007fffff), Z3)
	VPBROADCASTD(c(0x00400000), Z6)
	Comment("Z0, Z1 = nearestInt(x*id)")
	for _, z := range []VecPhysical{Z0, Z1} {
		VMULPS(Z5, z, z)
		VADDPS(Z2, z, z)
		VPANDD(Z3, z, z)
		VPSUBD(Z6, z, z)
	}
	if !sums {
		VPEXTRW(U8(0), X4, Mem{Base: RDI})
		VPMOVDB(Z0, Mem{Base: RDI, Disp: 2})
		VPMOVDB(Z1, Mem{Base: RDI, Disp: 18})
	} else {
		Comment("-8*sum(q), d as float32, q")
		VPADDD(Z1, Z0, Z7)
		reduce16(Z7, Z8, func(a, b, c Op) { VPADDD(a, b, c) })
		VPSLLD(U8(3), X7, X7)
		VPXORD(X8, X8, X8)
		VPSUBD(X7, X8, X8)
		VMOVD(X8, Mem{Base: RDI})
		VCVTPH2PS(X4, X4)
		VMOVSS(X4, Mem{Base: RDI, Disp: 4})
		VPMOVDB(Z0, Mem{Base: RDI, Disp: 8})
		VPMOVDB(Z1, Mem{Base: RDI, Disp: 24})
	}
	MOVL(U32(1), EAX)
	Store(AL, ReturnIndex(0))
	VZEROUPPER()
	RET()
	Label(name + "fail")
	XORL(EAX, EAX)
	Store(AL, ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// r8acc is the float accumulator of vector a and rows 2p (lanes 0-7), 2p+1
// (lanes 8-15) in the repacked kernels.
func r8acc(a, p int) VecPhysical {
	return []VecPhysical{Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}[4*a+p]
}

// r8header declares a repacked kernel, func(nb int, w, x *byte, xstride
// int, out *float32, ostride int) with row r of vector a at out + a*ostride
// bytes + 4r, for na vectors, loads its arguments
// (CX = nb, SI = w, R8 = x, R9 = xstride, R10 = x+3*xstride) and clears the
// accumulators; it returns the address of byte disp of vector a.
func r8header(name string, na int) func(a, disp int) Mem {
	header(name, "func(nb int, w, x *byte, xstride int, out *float32, ostride int)")
	for a := 0; a < na; a++ {
		for p := 0; p < 4; p++ {
			VPXORD(r8acc(a, p), r8acc(a, p), r8acc(a, p))
		}
	}
	xb := []Mem{{Base: R8}, {Base: R8, Index: R9, Scale: 1}, {Base: R8, Index: R9, Scale: 2}, {Base: R10}}
	return func(a, disp int) Mem { m := xb[a]; m.Disp = disp; return m }
}

// r8Footer closes a repacked kernel's block loop (weights advance by wb
// bytes, activations by xb), reduces every (vector, row) accumulator in
// ggml's hsum_float_8 order and stores it to out[8*a+r].
func r8Footer(name string, na, wb, xb int) {
	ADDQ(U32(wb), RSI)
	ADDQ(U32(xb), R8)
	ADDQ(U32(xb), R10)
	loopEnd(name)
	Comment("hsum of every (vector, row) in ggml's hsum_float_8 order; vector a's rows at out + a*ostride")
	Load(Param("out"), RDX)
	Load(Param("ostride"), RCX)
	for a := 0; a < na; a++ {
		for p := 0; p < 4; p++ {
			VMOVAPS(r8acc(a, p), Z15)
			for h := 0; h < 2; h++ {
				if h == 1 {
					VEXTRACTF64X4(U8(1), Z15, Y15)
				}
				hsumStore(Y15, X15, 4*(2*p+h))
			}
		}
		if a < na-1 {
			ADDQ(RCX, RDX)
		}
	}
	VZEROUPPER()
	RET()
}

// q40r8 generates the kernel of repacked Q4_0 weights (see repack.go in
// model/quant): eight weight rows against na activation rows per pass. A
// repacked block group holds, for one block column of eight rows, the eight
// f16 scales and then two 64-byte halves of nibbles: in half h, byte e of the
// first 32 has row 4h's element e in its low nibble and row 4h+2's in its
// high nibble, byte 32+e the same for rows 4h+1 and 4h+3. So one load, a
// mask and a shift give two registers of [row 2p (32 unsigned values), row
// 2p+1]: the integer lanes of a 256-bit half are exactly those of the AVX2
// kernel for that row, sum over four elements of (q-8)*x, computed as
// VPDPBUSD(q, x) - 8*sum(x). Per row, block and vector the float side is the
// AVX2 kernel's: d_w*d_x rounded to float32, one FMA into eight lanes, and
// ggml's hsum order at the end. out[8*a+r] is row r's product with vector a.
//
// With q8 it generates the repacked Q8_0 kernel instead: a group holds the
// eight f16 scales and then, per row pair p, 64 bytes [row 2p, row 2p+1]
// of weights stored as w+128 (unsigned), so the lanes are VPDPBUSD(w+128,
// x) - 128*sum(x): the true sums of four products, which are the AVX2
// kernel's (VPSIGNB/VPMADDUBSW saturate nowhere for activations in
// [-127, 127]).
//
// With q5 it generates the repacked Q5_0 kernel: a group holds the eight
// f16 scales, then per row pair p (the pairs of Z0-Z3) 8 bytes of fifth
// bits (bit e of the low dword: row 2p's element e; of the high dword: row
// 2p+1's), then the nibbles as Q4_0's. A masked byte add puts 16 on every
// element whose fifth bit is set, so the lanes are VPDPBUSD(q+16*h, x) -
// 16*sum(x): the AVX2 kernel's sums of four products (q+16h-16)*x.
func q40r8(name string, na int, q8, q5 bool) {
	xm := r8header(name, na)
	ws := []VecPhysical{Z0, Z1, Z2, Z3}
	idx := []VecPhysical{Z6, Z7, Z8, Z9}
	off, wb, nib := "8", 144, 16
	switch {
	case q8:
		off, wb = "128", 272
	case q5:
		off, wb, nib = "16", 176, 48
	}
	Comment("Z4 = 0x0F bytes, Z5 = the weights' offset (" + off + ") in bytes, Z6-Z9 = scale lane indexes of row pairs")
	VMOVDQU32(b0F, Z4)
	switch {
	case q8:
		VMOVDQU32(b80, Z5)
	case q5:
		VMOVDQU32(b10, Z5)
	default:
		VMOVDQU32(b08, Z5)
	}
	for p := 0; p < 4; p++ {
		VMOVDQU32(r8idx.Offset(64*p), idx[p])
	}
	loopStart(name)
	Comment("Y15 = the eight rows' d_w; Z0-Z3 = unsigned weights of rows [2p, 2p+1]")
	VCVTPH2PS(Mem{Base: RSI}, Y15)
	for h := 0; h < 2; h++ {
		if q8 {
			VMOVDQU64(Mem{Base: RSI, Disp: 16 + 128*h}, ws[2*h])
			VMOVDQU64(Mem{Base: RSI, Disp: 16 + 128*h + 64}, ws[2*h+1])
			continue
		}
		VMOVDQU64(Mem{Base: RSI, Disp: nib + 64*h}, Z14)
		VPANDD(Z4, Z14, ws[2*h])
		VPSRLW(U8(4), Z14, Z14)
		VPANDD(Z4, Z14, ws[2*h+1])
	}
	if q5 {
		Comment("fifth bits: +16 where set")
		for p := 0; p < 4; p++ {
			KMOVQ(Mem{Base: RSI, Disp: 16 + 8*p}, K2)
			VPADDB(Z5, ws[p], K2, ws[p])
		}
	}
	for a := 0; a < na; a++ {
		Comment(fmt.Sprintf("vector %d: Z10 = x in both halves, Y12 = d_w*d_x, Z11 = -offset*sum(x) per lane", a))
		VBROADCASTI64X4(xm(a, 2), Z10)
		VPBROADCASTW(xm(a, 0), X12)
		VCVTPH2PS(X12, Y12)
		VMULPS(Y15, Y12, Y12)
		VPXORD(Z13, Z13, Z13)
		vpdpbusd(Z10, Z5, Z13)
		VPXORD(Z11, Z11, Z11)
		VPSUBD(Z13, Z11, Z11)
		for p := 0; p < 4; p++ {
			VMOVDQA64(Z11, Z13)
			vpdpbusd(Z10, ws[p], Z13)
			VCVTDQ2PS(Z13, Z13)
			VPERMPS(Z12, idx[p], Z14)
			VFMADD231PS(Z13, Z14, r8acc(a, p))
		}
	}
	r8Footer(name, na, wb, 34)
}

// q40r16 generates the kernel of repacked Q4_0 weights (see repackQ4_0 in
// model/quant): a group of sixteen rows, one 288-byte block column after
// the other, against na (1-4) activation vectors, one row per 32-bit
// lane. A column holds the sixteen rows' f16 scales and then four 64-byte
// chunks; chunk k holds each row's qs bytes 4k..4k+3 (row r at 4r), so
// each is one aligned load and the weights are one forward stream. Masked, a chunk gives every row's
// elements 4k..4k+3 in its lane; shifted by 4, elements 16+4k..16+4k+3.
// Activation blocks are 40 bytes: int32 -8*sum(q), float32 d_x, the 32
// int8 q. Per row and vector the lane's integer sum is exact,
// sum((w-8)*x) = VPDPBUSD(w, x) summed over the eight dwords - 8*sum(x),
// and the float side is one FMA per block: acc = float(isum) * (d_w*d_x)
// + acc, with d_w*d_x rounded to float32, blocks in order. No horizontal
// sum: out[16*a+r] is lane r of vector a's accumulator.
func q40r16(name string, na int) {
	header(name, "func(nb int, w *byte, x *byte, xstride int, out *float32, ostride int)")
	accs := []VecPhysical{Z16, Z17, Z18, Z19}
	ws := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7}
	for a := 0; a < na; a++ {
		VPXORD(accs[a], accs[a], accs[a])
	}
	Comment("Z8 = 0x0F bytes")
	VMOVDQU32(b0F, Z8)
	xm := []Mem{{Base: R8}, {Base: R8, Index: R9, Scale: 1}, {Base: R8, Index: R9, Scale: 2}, {Base: R10}}
	at := func(a, disp int) Mem { m := xm[a]; m.Disp = disp; return m }
	loopStart(name)
	Comment("Z9 = d_w of the sixteen rows")
	VCVTPH2PS(Mem{Base: RSI}, Z9)
	Comment("Z0-Z3: elements 4k..4k+3 of every row; Z4-Z7: 16+4k..16+4k+3")
	for k := 0; k < 4; k++ {
		VMOVDQU64(Mem{Base: RSI, Disp: 32 + 64*k}, Z14)
		VPANDD(Z8, Z14, ws[k])
		VPSRLW(U8(4), Z14, Z14)
		VPANDD(Z8, Z14, ws[4+k])
	}
	for a := 0; a < na; a++ {
		Comment(fmt.Sprintf("vector %d: Z10 = its exact sums, Z11 = d_w*d_x", a))
		VPBROADCASTD(at(a, 0), Z10)
		for j := 0; j < 8; j++ {
			Instruction(&ir.Instruction{Opcode: "VPDPBUSD.BCST", Operands: []Op{at(a, 8+4*j), ws[j], Z10}})
		}
		VCVTDQ2PS(Z10, Z10)
		Instruction(&ir.Instruction{Opcode: "VMULPS.BCST", Operands: []Op{at(a, 4), Z9, Z11}})
		VFMADD231PS(Z11, Z10, accs[a])
	}
	ADDQ(U32(288), RSI)
	ADDQ(U32(40), R8)
	ADDQ(U32(40), R10)
	loopEnd(name)
	stridedStores(na, func(a int) VecPhysical { return accs[a] })
	VZEROUPPER()
	RET()
}

// q4kr16 generates the kernel of repacked Q4_K weights (see repackQ4K in
// model/quant): a group of sixteen rows, one 2304-byte super-block column
// after the other, against na (1-8) Q8_K activation vectors, one row per
// 32-bit lane. A column holds d[16] and dmin[16] (f16), the rows' 12 bytes
// of 6-bit scales and mins as three arrays of sixteen dwords, then 32
// chunks of 64 bytes: chunk c holds each row's qs bytes 4c..4c+3 (row r at
// 4r), so every load is one aligned zmm and the weights one forward stream
// (two groups of eight, 1152 bytes apart, ran at 11-12 GB/s from memory on
// a Zen 4 where this layout runs at 24-25). With five or more vectors the
// weights are prefetched (q4kPrefetchMin): a column then takes long
// enough that loads from memory wait for the hardware prefetcher; with
// fewer the stream is fast and prefetching only costs.
// Chunk
// 8j+k, masked, gives every row's elements 4k..4k+3 of sub-block 2j in its
// lane; shifted by 4, those of sub-block 2j+1.
//
// Per row, vector and super-block the integer sums are exact: isum =
// sum over sub-blocks s of sc_s * VPDPBUSD(q, x) (a VPMULLD by the row's
// scale per sub-block), msum = sum of m_s * (bsum_2s + bsum_2s+1) (VPDPWSSD
// of the mins, as word pairs, with the bsums' dword). The float side is
// acc = -(dmin*d_x)*float(msum) + acc, then acc = float(isum)*(d*d_x) +
// acc, each one fused operation with the products rounded to float32, and
// out[16*a+r] is lane r of vector a's accumulator (no horizontal sum).
//
// With five (Q5_K, see repackQ5K in model/quant) the column is Q4_K's
// with eight chunks of fifth bits (q5kQh) among the nibbles (q5kQs), and
// each nibble register gets its fifth bit merged in (q5kWeights); the
// contract is the same with 5-bit q.
//
// Registers: Z16-Z23 the accumulators, Z24-Z31 isum, Z8-Z15 sub-block
// sums (with na <= 4 both sub-blocks of a chunk at once, Z8-Z11 and
// Z12-Z15, so each chunk is loaded once; with more vectors one sub-block at
// a time, each chunk loaded twice), Z0 the nibble mask.
func q4kr16(name string, na int, five bool) {
	colB, qs := q4kColB, func(c int) int { return 256 + 64*c }
	if five {
		colB, qs = q5kColB, q5kQs
	}
	header(name, "func(nb int, w *byte, x *byte, xstride int, out *float32, ostride int)")
	if na > 4 {
		LEAQ(Mem{Base: R10, Index: R9, Scale: 2}, R11)
		ADDQ(R9, R11)
	}
	sa := AllocLocal(128) // the scales sc[0..3], sc[4..7] of the sixteen rows (a dword each)
	acc := func(a int) VecPhysical { return []VecPhysical{Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23}[a] }
	isum := func(a int) VecPhysical { return []VecPhysical{Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}[a] }
	part := func(a, h int) VecPhysical {
		return []VecPhysical{Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15}[a+4*h]
	}
	both := na <= 4
	// prefetch(s), s = 0..31 the chunk loads of a column in order, asks
	// for the lines s, s+32, ... of the column q4kPrefetchCols on: with
	// q4kPrefetchMin or more vectors a column takes long enough that the
	// hardware prefetcher lets loads from memory wait (eight vectors: 95
	// G multiply-adds a second on one thread from memory against 163 in
	// cache); with fewer the stream is fast and software prefetching only
	// costs (a tenth with one vector).
	prefetch := func(s int) {
		if na < q4kPrefetchMin {
			return
		}
		for l := s; l < colB/64; l += 32 {
			PREFETCHT0(Mem{Base: RSI, Disp: 64*l + q4kPrefetchCols*colB})
		}
	}
	for a := 0; a < na; a++ {
		VPXORD(acc(a), acc(a), acc(a))
	}
	Comment("Z0 = 0x0F bytes")
	VMOVDQU32(b0F, Z0)
	// pair loads the sixteen rows' dwords at SI+disp into z.
	pair := func(disp int, z VecPhysical) {
		VMOVDQU64(Mem{Base: RSI, Disp: disp}, z)
	}
	// halfPair converts the sixteen f16 at SI+disp to z.
	halfPair := func(disp int, z VecPhysical) {
		VCVTPH2PS(Mem{Base: RSI, Disp: disp}, z)
	}
	loopStart(name)
	Comment("decode the sixteen rows' scales and mins (ggml's utmp steps, one dword lane per row):")
	Comment("stack: sc[0..3], sc[4..7]; Z6 = m[0..3], Z7 = m[4..7] (a byte each)")
	pair(64, Z1)
	pair(128, Z2)
	pair(192, Z3)
	VPANDD(b3F, Z1, Z4)
	VMOVDQU64(Z4, sa)
	VPSRLD(U8(6), Z1, Z4)
	VPANDD(b03, Z4, Z4)
	VPSLLD(U8(4), Z4, Z4)
	VPANDD(Z0, Z3, Z5)
	VPORD(Z5, Z4, Z4)
	VMOVDQU64(Z4, sa.Offset(64))
	VPANDD(b3F, Z2, Z6)
	VPSRLD(U8(6), Z2, Z4)
	VPANDD(b03, Z4, Z4)
	VPSLLD(U8(4), Z4, Z4)
	VPSRLD(U8(4), Z3, Z7)
	VPANDD(Z0, Z7, Z7)
	VPORD(Z4, Z7, Z7)
	Comment("mins: isum = msum, acc -= (dmin*d_x) * msum; Z5 = dmin")
	for a := 0; a < na; a++ {
		VPXORD(isum(a), isum(a), isum(a))
	}
	for sb := 0; sb < 8; sb++ {
		VPSHUFB(k4mshuf.Offset(64*(sb%4)), []VecPhysical{Z6, Z7}[sb/4], Z1)
		for a := 0; a < na; a++ {
			Instruction(&ir.Instruction{Opcode: "VPDPWSSD.BCST", Operands: []Op{xaddr(a, 260+4*sb), Z1, isum(a)}})
		}
	}
	halfPair(32, Z5)
	for a := 0; a < na; a++ {
		VCVTDQ2PS(isum(a), isum(a))
		VMULPS_BCST(xaddr(a, 0), Z5, part(a, 0))
		VFNMADD231PS(isum(a), part(a, 0), acc(a))
		VPXORD(isum(a), isum(a), isum(a))
	}
	// scale puts sub-block sb's scale of the sixteen rows in z.
	scale := func(sb int, z VecPhysical) {
		m := sa.Offset(64 * (sb / 4))
		if sb%4 == 0 {
			VMOVDQU32(m, z)
		} else {
			VPSRLD(U8(8*(sb%4)), m, z)
		}
		if sb%4 != 3 {
			VPANDD(bFF, z, z)
		}
	}
	for j := 0; j < 4; j++ {
		hs := []int{0, 1}
		if both {
			hs = []int{-1}
		}
		for _, h := range hs {
			Comment(fmt.Sprintf("sub-blocks %d, %d", 2*j, 2*j+1))
			for a := 0; a < na; a++ {
				for hh := 0; hh < 2; hh++ {
					if h == hh || h < 0 {
						VPXORD(part(a, hh*btoi(both)), part(a, hh*btoi(both)), part(a, hh*btoi(both)))
					}
				}
			}
			if five {
				Comment("Z5 = 0x10 bytes")
				VMOVDQU32(b10, Z5)
			}
			for k := 0; k < 8; k++ {
				pair(qs(8*j+k), Z1)
				if h <= 0 {
					prefetch(8*j + k)
				}
				if five {
					q5kWeights(j, h, k)
				} else {
					if h <= 0 {
						VPANDD(Z0, Z1, Z2)
					}
					if h != 0 {
						VPSRLW(U8(4), Z1, Z3)
						VPANDD(Z0, Z3, Z3)
					}
				}
				for a := 0; a < na; a++ {
					for hh := 0; hh < 2; hh++ {
						if h == hh || h < 0 {
							w := []VecPhysical{Z2, Z3}[hh]
							Instruction(&ir.Instruction{Opcode: "VPDPBUSD.BCST", Operands: []Op{xaddr(a, 4+64*j+32*hh+4*k), w, part(a, hh*btoi(both))}})
						}
					}
				}
			}
			for hh := 0; hh < 2; hh++ {
				if h == hh || h < 0 {
					sc := []VecPhysical{Z4, Z5}[hh]
					scale(2*j+hh, sc)
					for a := 0; a < na; a++ {
						p := part(a, hh*btoi(both))
						VPMULLD(sc, p, p)
						VPADDD(p, isum(a), isum(a))
					}
				}
			}
		}
	}
	Comment("acc += (d*d_x) * isum; Z5 = d")
	halfPair(0, Z5)
	kColumnEnd(name, na, colB, Z5, func(a int) VecPhysical { return part(a, 0) }, isum, acc)
}

// kColumnEnd ends the loop body of a K-quant sixteen-row kernel (Q8_K
// activations, 292-byte blocks) and the kernel: acc(a) += float(isum(a)) *
// (d*d_x), d the rows' scales in dz and tmp(a) clobbered, then the next
// block column (colB bytes on) and activation block, and after the loop
// the results.
func kColumnEnd(name string, na, colB int, dz VecPhysical, tmp, isum, acc func(a int) VecPhysical) {
	for a := 0; a < na; a++ {
		VCVTDQ2PS(isum(a), isum(a))
		VMULPS_BCST(xaddr(a, 0), dz, tmp(a))
		VFMADD231PS(isum(a), tmp(a), acc(a))
	}
	ADDQ(U32(colB), RSI)
	ADDQ(U32(292), R8)
	ADDQ(U32(292), R10)
	if na > 4 {
		ADDQ(U32(292), R11)
	}
	loopEnd(name)
	stridedStores(na, acc)
	VZEROUPPER()
	RET()
}

// stridedStores writes the sixteen-row kernels' results: vector a's
// sixteen floats (acc(a)) at out + a*ostride bytes, so they go straight
// into a row-major result whose vectors are a matrix's row count apart.
func stridedStores(na int, acc func(a int) VecPhysical) {
	Load(Param("out"), RDI)
	Load(Param("ostride"), RDX)
	for a := 0; a < na; a++ {
		VMOVUPS(acc(a), Mem{Base: RDI})
		if a < na-1 {
			ADDQ(RDX, RDI)
		}
	}
}

// q4kColB is the size of a repacked Q4_K block column (sixteen rows'
// super-blocks).
const q4kColB = 2304

// Software prefetching of the Q4_K and Q5_K sixteen-row kernels (see
// q4kr16): from q4kPrefetchMin vectors on, q4kPrefetchCols columns (6.9
// KiB) ahead. Measured from memory (BenchmarkRepackedFromMemory, 62 MB of
// Q4_K): eight vectors on one thread 93-113 -> 113-131 G multiply-adds a
// second, on two 131-153 -> 159-206 (two and three columns ahead alike;
// one less); two and four vectors lost 5-10% with it, one a tenth.
const q4kPrefetchMin, q4kPrefetchCols = 5, 3

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// f32z generates gemmF32R4x<nv>AVX512: four weight rows (a + r*astride
// bytes) against nv (1-3) activation vectors (b + v*bstride bytes) of n
// floats (a multiple of 8), out[nv*r+v] = row r · vector v. Each product
// keeps DotF32's AVX2 order exactly (dotF32TiledAVX2): four accumulators of
// eight lanes over 32 floats at a time, then eight floats at a time into
// the first, then ((0+1)+(2+3)) and two horizontal adds. Accumulators 0 and
// 1 of a product share one 512-bit register (lanes 0-7 and 8-15: a 64-byte
// load holds floats 0-15 of a 32-float step, which are theirs) and 2 and 3
// another, so each FMA does two of DotF32's; the eight-float steps run
// masked to lanes 0-7. Accumulators in Z8-Z31, weights in Z0-Z3, vectors
// in Z4-Z6. Four rows per vector load halve the bytes a product reads
// from L2 (the vectors of a tile) against two rows, which at two 512-bit
// FMAs a cycle were the limit.
func f32z(nv int) {
	const nr = 4
	name := fmt.Sprintf("gemmF32R4x%dAVX512", nv)
	lbl := func(s string) string { return fmt.Sprintf("f32r4x%d%s", nv, s) }
	TEXT(name, NOSPLIT, fmt.Sprintf("func(n int, a *float32, astride int, b *float32, bstride int, out *[%d]float32)", nr*nv))
	Pragma("noescape")
	kmask(K1, 0xFF) // before AX holds astride
	Load(Param("n"), RCX)
	Load(Param("a"), RSI)
	Load(Param("astride"), RAX)
	Load(Param("b"), RDI)
	Load(Param("bstride"), RBX)
	LEAQ(Mem{Base: RSI, Index: RAX, Scale: 2}, R9) // rows 2 and 3
	zs := []VecPhysical{Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15, Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23,
		Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}
	acc := func(r, v, h int) VecPhysical { return zs[(nv*r+v)*2+h] }
	for r := 0; r < nr; r++ {
		for v := 0; v < nv; v++ {
			for h := 0; h < 2; h++ {
				VPXORD(acc(r, v, h), acc(r, v, h), acc(r, v, h))
			}
		}
	}
	waddr := func(r, disp int) Mem {
		base := []Register{RSI, RSI, R9, R9}[r]
		if r%2 == 0 {
			return Mem{Base: base, Disp: disp}
		}
		return Mem{Base: base, Index: RAX, Scale: 1, Disp: disp}
	}
	xaddr := func(v, disp int) Mem {
		if v == 0 {
			return Mem{Base: RDI, Disp: disp}
		}
		return Mem{Base: RDI, Index: RBX, Scale: uint8(v), Disp: disp}
	}
	ws := []VecPhysical{Z0, Z1, Z2, Z3}
	xs := []VecPhysical{Z4, Z5, Z6}
	advance := func(k int) {
		ADDQ(U8(k), RSI)
		ADDQ(U8(k), R9)
		ADDQ(U8(k), RDI)
		SUBQ(U8(k/4), RCX)
	}
	Label(lbl("loop32"))
	CMPQ(RCX, U8(32))
	JLT(LabelRef(lbl("loop8")))
	for h := 0; h < 2; h++ {
		for r := 0; r < nr; r++ {
			VMOVUPS(waddr(r, 64*h), ws[r])
		}
		for v := 0; v < nv; v++ {
			VMOVUPS(xaddr(v, 64*h), xs[v])
			for r := 0; r < nr; r++ {
				VFMADD231PS(xs[v], ws[r], acc(r, v, h))
			}
		}
	}
	advance(128)
	JMP(LabelRef(lbl("loop32")))
	Label(lbl("loop8"))
	CMPQ(RCX, U8(8))
	JLT(LabelRef(lbl("sum")))
	for r := 0; r < nr; r++ {
		VMOVUPS(waddr(r, 0), ws[r].AsY())
	}
	for v := 0; v < nv; v++ {
		VMOVUPS(xaddr(v, 0), xs[v].AsY())
		for r := 0; r < nr; r++ {
			VFMADD231PS(xs[v], ws[r], K1, acc(r, v, 0))
		}
	}
	advance(32)
	JMP(LabelRef(lbl("loop8")))
	Label(lbl("sum"))
	Load(Param("out"), RDX)
	for r := 0; r < nr; r++ {
		for v := 0; v < nv; v++ {
			// SUM4F32: (0+1)+(2+3), then the low and high halves, then
			// two horizontal adds.
			VEXTRACTF64X4(U8(1), acc(r, v, 0), Y0)
			VADDPS(Y0, acc(r, v, 0).AsY(), Y0)
			VEXTRACTF64X4(U8(1), acc(r, v, 1), Y1)
			VADDPS(Y1, acc(r, v, 1).AsY(), Y1)
			VADDPS(Y1, Y0, Y0)
			VEXTRACTF128(U8(1), Y0, X1)
			VADDPS(X1, X0, X0)
			VHADDPS(X0, X0, X0)
			VHADDPS(X0, X0, X0)
			VMOVSS(X0, Mem{Base: RDX, Disp: 4 * (nv*r + v)})
		}
	}
	VZEROUPPER()
	RET()
}

// tiled generates dotF32TiledAVX2: for r < rows, dst[r] = the dot
// product of a[:n] with vector r of b, which starts at b + r*rowStride
// bytes and continues tileStride bytes further after every 32 floats; n
// must be a multiple of 8. Four accumulators of eight lanes over 32 floats
// at a time, then eight at a time into the first (only inside the last,
// partial tile, which is contiguous), then ((0+1)+(2+3)) and two
// horizontal adds: DotF32's AVX2 operations per vector, whatever the rows
// and strides. AVX2 and FMA.
func tiled() {
	name := "dotF32TiledAVX2"
	TEXT(name, NOSPLIT, "func(dst, a, b *float32, n, rows, rowStride, tileStride int)")
	Pragma("noescape")
	Load(Param("dst"), RDX)
	Load(Param("a"), R9)
	Load(Param("b"), R10)
	Load(Param("n"), R11)
	Load(Param("rows"), R12)
	Load(Param("rowStride"), R13)
	Load(Param("tileStride"), R8)
	Label(name + "row")
	TESTQ(R12, R12)
	JEQ(LabelRef(name + "done"))
	MOVQ(R9, RSI)
	MOVQ(R10, RDI)
	MOVQ(R11, RCX)
	for _, y := range []VecPhysical{Y0, Y1, Y2, Y3} {
		VXORPS(y, y, y)
	}
	Label(name + "32")
	CMPQ(RCX, U8(32))
	JLT(LabelRef(name + "8"))
	for j, y := range []VecPhysical{Y0, Y1, Y2, Y3} {
		VMOVUPS(Mem{Base: RSI, Disp: 32 * j}, Y4)
		VFMADD231PS(Mem{Base: RDI, Disp: 32 * j}, Y4, y)
	}
	ADDQ(U8(128), RSI)
	ADDQ(R8, RDI)
	SUBQ(U8(32), RCX)
	JMP(LabelRef(name + "32"))
	Label(name + "8")
	CMPQ(RCX, U8(8))
	JLT(LabelRef(name + "sum"))
	VMOVUPS(Mem{Base: RSI}, Y4)
	VFMADD231PS(Mem{Base: RDI}, Y4, Y0)
	ADDQ(U8(32), RSI)
	ADDQ(U8(32), RDI)
	SUBQ(U8(8), RCX)
	JMP(LabelRef(name + "8"))
	Label(name + "sum")
	VADDPS(Y1, Y0, Y0)
	VADDPS(Y3, Y2, Y2)
	VADDPS(Y2, Y0, Y0)
	VEXTRACTF128(U8(1), Y0, X1)
	VADDPS(X1, X0, X0)
	VHADDPS(X0, X0, X0)
	VHADDPS(X0, X0, X0)
	MOVSS(X0, Mem{Base: RDX})
	ADDQ(U8(4), RDX)
	ADDQ(R13, R10)
	DECQ(R12)
	JMP(LabelRef(name + "row"))
	Label(name + "done")
	VZEROUPPER()
	RET()
}

// attnScores generates attnScoresF16AVX2 (zmm false) or
// attnScoresF16AVX512: the attention scores of a query q (hd float32, hd
// even) against keys stored as halves in tiles of 32 positions, each tile
// hd rows of 32 halves (row d: dimension d of the tile's positions). For
// every position p of the tiles tiles, dst[p] = even + odd, even the sum
// over even d of q[d]*k_p[d] and odd over odd d, each a chain of FMAs in
// order of d from 0 (see attnScoresF16Generic); a lane's operations do not
// depend on the vector width. One tile per pass, two parities: AVX2 four
// groups of eight positions (eight accumulators), AVX-512 two groups of
// sixteen (four), so the keys are read as one forward stream: AVX-512 used
// to take two tiles at once, two streams a tile (4 KiB at 64 dimensions)
// apart, which from memory ran at 6-11 GB/s where one stream runs at
// 17-26 (one thread, an 8K-position cache per head; in L3 both about 47).
// AVX2, FMA and F16C, or AVX-512 F.
func attnScores(zmm bool) {
	name, lanes := "attnScoresF16AVX2", 8
	if zmm {
		name, lanes = "attnScoresF16AVX512", 16
	}
	TEXT(name, NOSPLIT, "func(dst, q *float32, k *uint16, tiles, hd int)")
	Pragma("noescape")
	Load(Param("dst"), RDX)
	Load(Param("q"), R9)
	Load(Param("k"), RDI)
	Load(Param("tiles"), R12)
	Load(Param("hd"), R11)
	MOVQ(R11, R13)
	SHLQ(U8(6), R13) // a tile's bytes
	reg := func(i int) VecPhysical {
		if zmm {
			return []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9}[i]
		}
		return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9}[i]
	}
	n := 32 / lanes // accumulators per parity: one tile's positions
	lbl := name + "1"
	Label(lbl + "tile")
	CMPQ(R12, U8(1))
	JLT(LabelRef(lbl + "end"))
	for i := 0; i < 2*n; i++ {
		VXORPS(reg(i), reg(i), reg(i))
	}
	MOVQ(R9, RSI)
	MOVQ(RDI, R10)
	MOVQ(R11, RCX)
	Label(lbl + "dim")
	for par := 0; par < 2; par++ {
		VBROADCASTSS(Mem{Base: RSI, Disp: 4 * par}, reg(8))
		for i := 0; i < n; i++ {
			VCVTPH2PS(Mem{Base: R10, Disp: 64*par + 2*lanes*i}, reg(9))
			VFMADD231PS(reg(9), reg(8), reg(n*par+i))
		}
	}
	ADDQ(U8(8), RSI)
	ADDQ(U8(128), R10)
	SUBQ(U8(2), RCX)
	JNZ(LabelRef(lbl + "dim"))
	for i := 0; i < n; i++ {
		VADDPS(reg(n+i), reg(i), reg(i))
		VMOVUPS(reg(i), Mem{Base: RDX, Disp: 4 * lanes * i})
	}
	ADDQ(U32(128), RDX)
	ADDQ(R13, RDI)
	SUBQ(U8(1), R12)
	JMP(LabelRef(lbl + "tile"))
	Label(lbl + "end")
	VZEROUPPER()
	RET()
}

// attnValues generates attnValuesF16AVX2 (zmm false) or
// attnValuesF16AVX512: the weighted sum of value rows stored as halves,
// row p of hd halves (hd a multiple of 8) at v + p*hd: out[d] = even +
// odd, even the sum over even p of w[p]*v_p[d] and odd over odd p, each a
// chain of FMAs in order of p from 0 (see attnValuesF16Generic); a lane's
// operations do not depend on the vector width. Dimensions go in chunks
// of four registers (eight accumulators: four groups, two parities), then
// one register at a time, then (AVX-512) eight with a ymm. AVX2, FMA and
// F16C, or AVX-512 F.
func attnValues(zmm bool) {
	name, lanes := "attnValuesF16AVX2", 8
	if zmm {
		name, lanes = "attnValuesF16AVX512", 16
	}
	TEXT(name, NOSPLIT, "func(out, w *float32, v *uint16, n, hd int)")
	Pragma("noescape")
	Load(Param("out"), RDX)
	Load(Param("w"), R9)
	Load(Param("v"), R10)
	Load(Param("n"), R12)
	Load(Param("hd"), R11)
	MOVQ(R11, R13)
	SHLQ(U8(1), R13) // row stride in bytes
	type chunk struct{ g, lanes int }
	chunks := []chunk{{4, lanes}, {1, lanes}}
	if zmm {
		chunks = append(chunks, chunk{1, 8})
	}
	for _, c := range chunks {
		reg := func(i int) VecPhysical {
			if c.lanes == 16 {
				return []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9}[i]
			}
			return []VecPhysical{Y0, Y1, Y2, Y3, Y4, Y5, Y6, Y7, Y8, Y9}[i]
		}
		acc := func(par, j int) VecPhysical { return reg(4*par + j) }
		width := c.g * c.lanes
		lbl := fmt.Sprintf("%s%d", name, width)
		Label(lbl + "chunk")
		CMPQ(R11, U8(width))
		JLT(LabelRef(lbl + "end"))
		for par := 0; par < 2; par++ {
			for j := 0; j < c.g; j++ {
				VXORPS(acc(par, j), acc(par, j), acc(par, j))
			}
		}
		MOVQ(R9, RSI)
		MOVQ(R10, RDI)
		MOVQ(R12, RCX)
		Label(lbl + "pair")
		CMPQ(RCX, U8(2))
		JLT(LabelRef(lbl + "last"))
		for par := 0; par < 2; par++ {
			VBROADCASTSS(Mem{Base: RSI, Disp: 4 * par}, reg(8))
			if par == 1 {
				ADDQ(R13, RDI)
			}
			for j := 0; j < c.g; j++ {
				VCVTPH2PS(Mem{Base: RDI, Disp: 2 * c.lanes * j}, reg(9))
				VFMADD231PS(reg(9), reg(8), acc(par, j))
			}
		}
		ADDQ(U8(8), RSI)
		ADDQ(R13, RDI)
		SUBQ(U8(2), RCX)
		JMP(LabelRef(lbl + "pair"))
		Label(lbl + "last")
		TESTQ(RCX, RCX)
		JEQ(LabelRef(lbl + "sum"))
		VBROADCASTSS(Mem{Base: RSI}, reg(8))
		for j := 0; j < c.g; j++ {
			VCVTPH2PS(Mem{Base: RDI, Disp: 2 * c.lanes * j}, reg(9))
			VFMADD231PS(reg(9), reg(8), acc(0, j))
		}
		Label(lbl + "sum")
		for j := 0; j < c.g; j++ {
			VADDPS(acc(1, j), acc(0, j), acc(0, j))
			VMOVUPS(acc(0, j), Mem{Base: RDX, Disp: 4 * c.lanes * j})
		}
		ADDQ(U32(4*width), RDX)
		ADDQ(U32(2*width), R10)
		SUBQ(U8(width), R11)
		JMP(LabelRef(lbl + "chunk"))
		Label(lbl + "end")
	}
	VZEROUPPER()
	RET()
}

// kernels selects the file generated by this run: avo's build context
// writes one assembly file per run, so the go:generate lines in
// model/quant/dot_amd64.go run the command once per file.
var kernels = flag.String("kernels", "vnni", "kernels to generate: vnni (dot_vnni_amd64.s) or avx2 (dot_avx2_amd64.s)")

func main() {
	flag.Parse()
	ConstraintExpr("amd64,!purego")
	switch *kernels {
	case "vnni":
		vnniKernels()
	case "avx2":
		avx2Kernels()
	case "iq":
		iqKernels()
	default:
		fmt.Fprintf(os.Stderr, "asm: unknown -kernels %q\n", *kernels)
		os.Exit(2)
	}
	Generate()
}

func vnniKernels() {
	consts()
	for _, nv := range []int{4, 8, 16} {
		q80(fmt.Sprintf("dotQ8_0x%dVNNI", nv), nv, false)
		q80(fmt.Sprintf("dotQ4_0x%dVNNI", nv), nv, true)
		q4k(fmt.Sprintf("dotQ4Kx%dVNNI", nv), nv)
	}
	q4k1("dotQ4KVNNI")
	for na := 1; na <= 4; na++ {
		q40r16(fmt.Sprintf("gemmQ4_0R16x%dVNNI", na), na)
	}
	q40r8("gemmQ8_0R8x1VNNI", 1, true, false)
	q40r8("gemmQ8_0R8x4VNNI", 4, true, false)
	q40r8("gemmQ5_0R8x1VNNI", 1, false, true)
	q40r8("gemmQ5_0R8x4VNNI", 4, false, true)
	for na := 1; na <= 8; na++ {
		q4kr16(fmt.Sprintf("gemmQ4KR16x%dVNNI", na), na, false)
	}
	for na := 1; na <= 8; na++ {
		q4kr16(fmt.Sprintf("gemmQ5KR16x%dVNNI", na), na, true)
	}
	q6kKernels()
	quantQ8K()
	quantQ80("quantQ8_0AVX512", false)
	quantQ80("quantQ8_0SumsAVX512", true)
	for nv := 1; nv <= 3; nv++ {
		f32z(nv)
	}
	tiled()
	for _, zmm := range []bool{false, true} {
		attnScores(zmm)
		attnValues(zmm)
	}
	expConsts()
	expKernel("expF32x4AVX2", false)
	expKernel("expF32x8AVX512", true)
	softmaxSteps()
}

// The constants of math.Exp (math/exp_amd64.s), eight float64 lanes each
// (the four-lane kernel reads the first four).
var expC struct {
	log2e, ln2u, ln2l, sixteenth, c64, c56, c48, c40, c32, c24, half, one, two, rng, absMask, bias Mem
}

func expConsts() {
	u := func(name string, v uint64) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		for l := 0; l < 8; l++ {
			DATA(8*l, U64(v))
		}
		return m
	}
	// As bit patterns: avo writes a whole float64 such as 2 as the
	// assembler's integer $(2).
	f := func(name string, v float64) Mem { return u(name, math.Float64bits(v)) }
	expC.log2e = f("explog2e", 1.4426950408889634073599246810018920)
	expC.ln2u = f("expln2u", 0.69314718055966295651160180568695068359375)
	expC.ln2l = f("expln2l", 0.28235290563031577122588448175013436025525412068e-12)
	expC.sixteenth = f("expsixteenth", 0.0625)
	expC.c64 = f("expc64", 2.4801587301587301587e-5)
	expC.c56 = f("expc56", 1.9841269841269841270e-4)
	expC.c48 = f("expc48", 1.3888888888888888889e-3)
	expC.c40 = f("expc40", 8.3333333333333333333e-3)
	expC.c32 = f("expc32", 4.1666666666666666667e-2)
	expC.c24 = f("expc24", 1.6666666666666666667e-1)
	expC.half = f("exphalf", 0.5)
	expC.one = f("expone", 1)
	expC.two = f("exptwo", 2)
	expC.rng = f("exprange", 700)
	expC.absMask = u("expabsmask", 0x7fffffffffffffff)
	expC.bias = u("expbias", 1023)
}

// expKernel generates func(dst, src *float32, n int) int: dst[i] =
// float32(exp(float64(src[i]))) four (AVX2) or eight (AVX-512) elements at
// a time for i < n (n a multiple of the lanes), with the operations of
// math.Exp's FMA path (math/exp_amd64.s), which math.Exp takes on every CPU
// with AVX2 and FMA: SLEEF's reduction by ln 2 in two parts, a degree-8
// Taylor polynomial at x/16 and four squarings. Every lane does the same
// operations in the same order at either width, so both give math.Exp's
// bits. It stops at the first group with an element outside [-700, 700]
// (or NaN), where math.Exp needs its overflow, underflow or denormal
// branches, and returns how many elements it wrote.
func expKernel(name string, zmm bool) {
	TEXT(name, NOSPLIT, "func(dst, src *float32, n int) int")
	Pragma("noescape")
	lanes := 4
	v := func(i int) VecPhysical { return []VecPhysical{Y0, Y1, Y2, Y3}[i] }
	h := func(i int) VecPhysical { return []VecPhysical{X0, X1, X2, X3}[i] } // half width: the int32 k, the float32 result
	if zmm {
		lanes = 8
		v = func(i int) VecPhysical { return []VecPhysical{Z0, Z1, Z2, Z3}[i] }
		h = func(i int) VecPhysical { return []VecPhysical{Y0, Y1, Y2, Y3}[i] }
	}
	Load(Param("dst"), RDI)
	Load(Param("src"), RSI)
	Load(Param("n"), RCX)
	XORQ(RAX, RAX)
	Label(name + "loop")
	CMPQ(RAX, RCX)
	JGE(LabelRef(name + "done"))
	in := Mem{Base: RSI, Index: RAX, Scale: 4}
	VCVTPS2PD(in, v(0))
	Comment("|x| <= 700 in every lane (NaN compares false), else stop here")
	if zmm {
		VPANDQ(expC.absMask, v(0), v(1))
		VCMPPD(U8(2), expC.rng, v(1), K1)
		KMOVW(K1, EDX)
		CMPL(EDX, U32(0xFF))
	} else {
		VANDPD(expC.absMask, v(0), v(1))
		VCMPPD(U8(2), expC.rng, v(1), v(1))
		VMOVMSKPD(v(1), EDX)
		CMPL(EDX, U32(15))
	}
	JNE(LabelRef(name + "done"))
	Comment("k = round(x·log2 e); x -= k·ln2 (two fused parts); x /= 16")
	VMULPD(expC.log2e, v(0), v(1))
	if zmm {
		VCVTPD2DQ(v(1), h(2))
	} else {
		VCVTPD2DQY(v(1), h(2))
	}
	VCVTDQ2PD(h(2), v(1))
	VFNMADD231PD(expC.ln2u, v(1), v(0))
	VFNMADD231PD(expC.ln2l, v(1), v(0))
	VMULPD(expC.sixteenth, v(0), v(0))
	Comment("Taylor series")
	VMOVUPD(expC.c64, v(1))
	for _, c := range []Mem{expC.c56, expC.c48, expC.c40, expC.c32, expC.c24, expC.half, expC.one} {
		VFMADD213PD(c, v(0), v(1))
	}
	VMULPD(v(1), v(0), v(0))
	Comment("four squarings of (1+y): y = y·(y+2), the last fused with +1")
	for i := 0; i < 3; i++ {
		VADDPD(expC.two, v(0), v(1))
		VMULPD(v(1), v(0), v(0))
	}
	VADDPD(expC.two, v(0), v(1))
	VFMADD213PD(expC.one, v(1), v(0))
	Comment("· 2^k, then to float32")
	VPMOVSXDQ(h(2), v(3))
	VPADDQ(expC.bias, v(3), v(3))
	VPSLLQ(U8(52), v(3), v(3))
	VMULPD(v(3), v(0), v(0))
	if zmm {
		VCVTPD2PS(v(0), h(0))
	} else {
		VCVTPD2PSY(v(0), h(0))
	}
	VMOVUPS(h(0), Mem{Base: RDI, Index: RAX, Scale: 4})
	ADDQ(U8(lanes), RAX)
	JMP(LabelRef(name + "loop"))
	Label(name + "done")
	VZEROUPPER()
	Store(RAX, ReturnIndex(0))
	RET()
}

// softmaxSteps generates the elementwise steps of Softmax over x[0:n], n a
// multiple of 16, AVX-512F, each float operation the one the generic twin
// does per element (so the results are the same bits):
//
//	mulMaxF32x16AVX512(x *float32, n int, s float32) float32: x[i] *= s;
//	  returns the largest x[i] (-Inf when none; a NaN is never the largest)
//	addF32x16AVX512(x *float32, n int, c float32): x[i] += c
//	mulF32x16AVX512(x *float32, n int, c float32): x[i] *= c
func softmaxSteps() {
	negInf := splat("softmaxneginf", 0xff800000)
	loop := func(name string, body func(m Mem)) {
		Load(Param("x"), RDI)
		Load(Param("n"), RCX)
		XORQ(RAX, RAX)
		Label(name + "loop")
		CMPQ(RAX, RCX)
		JGE(LabelRef(name + "done"))
		body(Mem{Base: RDI, Index: RAX, Scale: 4})
		ADDQ(U8(16), RAX)
		JMP(LabelRef(name + "loop"))
		Label(name + "done")
	}

	TEXT("mulMaxF32x16AVX512", NOSPLIT, "func(x *float32, n int, s float32) float32")
	Pragma("noescape")
	Load(Param("s"), X1)
	VBROADCASTSS(X1, Z1)
	VMOVUPS(negInf, Z0)
	loop("mulMaxF32x16AVX512", func(m Mem) {
		VMULPS(m, Z1, Z2)
		VMOVUPS(Z2, m)
		Comment("max(x, acc): the second source when either is NaN, so a NaN is never taken")
		VMAXPS(Z0, Z2, Z0)
	})
	Comment("the largest of the sixteen lanes")
	VEXTRACTF32X8(U8(1), Z0, Y1)
	VMAXPS(Y1, Y0, Y0)
	VEXTRACTF128(U8(1), Y0, X1)
	VMAXPS(X1, X0, X0)
	VMOVHLPS(X0, X0, X1)
	VMAXPS(X1, X0, X0)
	VMOVSHDUP(X0, X1)
	VMAXSS(X1, X0, X0)
	VZEROUPPER()
	Store(X0, ReturnIndex(0))
	RET()

	for _, op := range []struct {
		name string
		f    func(m Mem)
	}{
		{"addF32x16AVX512", func(m Mem) { VADDPS(m, Z1, Z2); VMOVUPS(Z2, m) }},
		{"mulF32x16AVX512", func(m Mem) { VMULPS(m, Z1, Z2); VMOVUPS(Z2, m) }},
	} {
		TEXT(op.name, NOSPLIT, "func(x *float32, n int, c float32)")
		Pragma("noescape")
		Load(Param("c"), X1)
		VBROADCASTSS(X1, Z1)
		loop(op.name, op.f)
		VZEROUPPER()
		RET()
	}
}
