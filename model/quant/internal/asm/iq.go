// The AVX2 product kernels of the 2- and 3-bit i-quants (-kernels iq:
// dot_iq_amd64.s): IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S weights
// against Q8_K activations, one vector or four.
//
// The kernels are func(nb int, w, x, grid *byte) float32 for one vector
// and func(nb int, w, x *byte, xstride int, grid *byte, out *[4]float32)
// for four: nb blocks of 256 weights at w, the Q8_K activation rows at x
// (x+xstride, ...), the type's codebook (model/quant's iqgrids.go, passed
// in so the tables exist once) at grid.
//
// Per group of 32 weights the codebook entries are loaded into one
// register (four 8-byte entries, or eight 4-byte ones for IQ3), the sign
// bits become ±1 bytes that VPSIGNB applies to the activations, VPMADDUBSW
// multiplies (the grid bytes are unsigned, at most 62: no int16
// saturation) and VPMADDWD scales the pair sums by the odd scale 2s+1
// (IQ2_XS and IQ2_S: one per 16 weights, one per 128-bit lane). The int32
// lanes of a block are summed exactly, so every block yields the integer
// sum bsum of ggml's generic vec_dot_*_q8_K (for activations in Q8_K's
// range -127..127: VPSIGNB cannot negate -128). The float side is the
// generic twins' (model/quant's dot_iq.go), one lane per vector: sumf +=
// (f16(d)·d_x)·float32(bsum), each product and sum rounded to float32,
// and at the end the type's power-of-two factor (1/8, 1/4 or 1) times
// sumf. So results equal the twins bit for bit, and a vector's result
// does not depend on how many vectors a kernel takes.
package main

import (
	"fmt"
	"math"
	"math/bits"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The read-only tables of the i-quant kernels (iqConsts).
var iqKsigns, iqBitsShuf, iqBits, iqOnes, iqW300, iqQhSel, iqQhMul Mem

// iqConsts declares the tables: iqKsigns[i] is the eight bytes, ±1, of
// the sign byte ggml's ksigns_iq2xs holds for the seven stored bits i (the
// eighth makes the count of negatives even), -1 where a bit is set;
// iqBitsShuf, iqBits and iqOnes turn 32 explicit sign bits into ±1 bytes
// (byte j of dword k is bit 8k+j).
func iqConsts() {
	iqKsigns = GLOBL("iqksigns", RODATA|NOPTR)
	for i := 0; i < 128; i++ {
		s := uint8(i) | uint8(bits.OnesCount8(uint8(i))&1)<<7
		var u uint64
		for j := 7; j >= 0; j-- {
			b := uint64(0x01)
			if s&(1<<j) != 0 {
				b = 0xFF
			}
			u = u<<8 | b
		}
		DATA(8*i, U64(u))
	}
	iqBitsShuf = bytes("iqbitsshuf", 32, func(i int) uint32 { return uint32(i / 8) })
	iqBits = bytes("iqbits", 32, func(i int) uint32 { return 1 << (i % 8) })
	iqOnes = bytes("iqones", 32, func(int) uint32 { return 1 })
	// the high index bits of IQ2_S (iq2sIndexes)
	iqW300 = words("iqw300", func(int) uint16 { return 0x300 })
	iqQhSel = bytes("iqqhsel", 32, func(i int) uint32 {
		if i%2 == 1 {
			return 0x80 // high byte 0
		}
		return uint32((i%16/2)/4 + 2*(i/16))
	})
	iqQhMul = words("iqqhmul", func(i int) uint16 { return 1 << (8 - 2*(i%4)) })
}

// words declares 16 words of read-only data, word i holding v(i).
func words(name string, v func(i int) uint16) Mem {
	return bytes(name, 32, func(i int) uint32 { return uint32(v(i/2) >> (8 * (i % 2)) & 0xFF) })
}

// iqType describes one i-quant's block for the generator.
type iqType struct {
	name   string  // kernel name prefix (dotIQ2XXS...)
	wb     int     // bytes of a weight block
	factor float32 // the power of two the sum is scaled by at the end
	// indexes, when set, stores the block's codebook indexes as words at
	// iqIdx before the groups run.
	indexes func()
	// group loads group ib's codebook bytes into iqG, its ±1 signs into
	// iqS and its int16 scales into iqSC.
	group func(ib int)
}

// Registers of the i-quant kernels. GP: CX blocks left, SI weights, DX
// codebook, R12 iqksigns, R8-R10 the activation rows (iqX); AX, BX, DI,
// R11, R13-R15 scratch. Vector: Y0-Y3 each vector's int32 lanes of the
// block, X4 the float sums (lane v: vector v), iqG/iqS/iqSC a group's
// weights, signs and scales, Y8/Y9 scratch for building them, Y10-Y13
// the activations, Y14/Y15 scratch.
var iqG, iqS, iqSC = Y5, Y6, Y7

var iqTypes = []iqType{
	{"dotIQ2XXS", 66, 0.125, nil, iq2xxsGroup},
	{"dotIQ2XS", 74, 0.125, nil, iq2xsGroup},
	{"dotIQ2S", 82, 0.125, iq2sIndexes, iq2sGroup},
	{"dotIQ3XXS", 98, 0.25, nil, iq3xxsGroup},
	{"dotIQ3S", 110, 1, nil, iq3sGroup},
}

// iqIdx is the frame slot of the block's codebook indexes (IQ2_S: 32
// words).
var iqIdx Mem

// iqKernels generates dot_iq_amd64.s.
func iqKernels() {
	iqConsts()
	for _, t := range iqTypes {
		for _, nv := range []int{1, 4} {
			iqKernel(t, nv)
		}
	}
}

// iqKernel generates t's kernel for nv (1 or 4) vectors: name "AVX2" for
// one, "x4AVX2" for four.
func iqKernel(t iqType, nv int) {
	name := t.name + "AVX2"
	if nv == 4 {
		name = t.name + "x4AVX2"
	}
	if nv == 1 {
		TEXT(name, NOSPLIT, "func(nb int, w, x, grid *byte) float32")
	} else {
		TEXT(name, NOSPLIT, "func(nb int, w, x *byte, xstride int, grid *byte, out *[4]float32)")
	}
	Pragma("noescape")
	if t.indexes != nil {
		iqIdx = AllocLocal(64)
	}
	Load(Param("nb"), RCX)
	Load(Param("w"), RSI)
	Load(Param("x"), R8)
	Load(Param("grid"), RDX)
	if nv == 4 {
		Load(Param("xstride"), R9)
		LEAQ(Mem{Base: R8, Index: R9, Scale: 2}, R10)
		ADDQ(R9, R10)
	}
	LEAQ(iqKsigns, R12)
	VXORPS(X4, X4, X4)
	l := fmt.Sprintf("%sx%d", t.name, nv)
	blockLoop(l, func() {
		for v := 0; v < nv; v++ {
			VPXOR(ys[v], ys[v], ys[v])
		}
		if t.indexes != nil {
			t.indexes()
		}
		for ib := 0; ib < 8; ib++ {
			t.group(ib)
			for v := 0; v < nv; v++ {
				q := ys[10+v]
				VMOVDQU(iqX(v, 4+32*ib), q)
				VPSIGNB(iqS, q, q)
				VPMADDUBSW(q, iqG, q)
				VPMADDWD(iqSC, q, q)
				VPADDD(q, ys[v], ys[v])
			}
		}
		// X8 lane v: vector v's bsum (exact, in any order)
		if nv == 1 {
			VEXTRACTI128(U8(1), Y0, X8)
			VPADDD(X0, X8, X8)
		} else {
			VPHADDD(Y1, Y0, Y8)
			VPHADDD(Y3, Y2, Y9)
			VPHADDD(Y9, Y8, Y8)
			VEXTRACTI128(U8(1), Y8, X9)
			VPADDD(X9, X8, X8)
		}
		if nv == 1 {
			VPSHUFD(U8(0x4E), X8, X9)
			VPADDD(X9, X8, X8)
			VPSHUFD(U8(0xB1), X8, X9)
			VPADDD(X9, X8, X8)
		}
		VCVTDQ2PS(X8, X8)
		// X9 lane v: f16(d) * d_x of vector v
		f16(Mem{Base: RSI}, X9)
		VBROADCASTSS(X9, X9)
		VMOVSS(Mem{Base: R8}, X10)
		for v := 1; v < nv; v++ {
			VINSERTPS(U8(v<<4), iqX(v, 0), X10, X10)
		}
		VMULPS(X10, X9, X9)
		VMULPS(X8, X9, X9)
		VADDPS(X9, X4, X4)
		ADDQ(imm(t.wb), RSI)
		ADDQ(U32(292), R8)
		if nv == 4 {
			ADDQ(U32(292), R10)
		}
	})
	if t.factor != 1 {
		MOVL(U32(math.Float32bits(t.factor)), EAX)
		VMOVD(EAX, X9)
		VBROADCASTSS(X9, X9)
		VMULPS(X9, X4, X4)
	}
	VZEROUPPER()
	if nv == 1 {
		Store(X4, ReturnIndex(0))
	} else {
		Load(Param("out"), RAX)
		VMOVUPS(X4, Mem{Base: RAX})
	}
	RET()
}

// iqX addresses byte disp of activation row v: R8 + v·R9 for rows 0-2,
// R10 (= R8 + 3·R9) for row 3.
func iqX(v, disp int) Mem {
	switch v {
	case 0:
		return Mem{Base: R8, Disp: disp}
	case 3:
		return Mem{Base: R10, Disp: disp}
	}
	return Mem{Base: R8, Index: R9, Scale: uint8(v), Disp: disp}
}

// grid64 loads the four 8-byte codebook entries whose indexes are in
// idx into iqG.
func grid64(idx [4]GPPhysical) {
	VMOVQ(Mem{Base: RDX, Index: idx[0], Scale: 8}, X8)
	VPINSRQ(U8(1), Mem{Base: RDX, Index: idx[1], Scale: 8}, X8, X8)
	VMOVQ(Mem{Base: RDX, Index: idx[2], Scale: 8}, X9)
	VPINSRQ(U8(1), Mem{Base: RDX, Index: idx[3], Scale: 8}, X9, X9)
	VINSERTI128(U8(1), X9, Y8, iqG)
}

// grid32 loads into iqG the eight 4-byte codebook entries whose indexes
// index puts into a register, four at a time (clobbers AX, BX, DI, R13).
func grid32(index func(k int, r GPPhysical)) {
	idx := [4]GPPhysical{RAX, RBX, RDI, R13}
	for h, x := range []VecPhysical{X8, X9} {
		for k, r := range idx {
			index(4*h+k, r)
		}
		VMOVD(Mem{Base: RDX, Index: idx[0], Scale: 4}, x)
		for k := 1; k < 4; k++ {
			VPINSRD(U8(k), Mem{Base: RDX, Index: idx[k], Scale: 4}, x, x)
		}
	}
	VINSERTI128(U8(1), X9, Y8, iqG)
}

// ksigns loads into iqS the ±1 bytes of the four seven-bit sign indexes
// in bits 0-27 of EAX (clobbers BX, DI, R13, R14).
func ksigns() {
	r := [4]GPPhysical{RBX, RDI, R13, R14}
	for l := 0; l < 4; l++ {
		MOVL(EAX, r[l].As32())
		if l > 0 {
			SHRL(U8(7*l), r[l].As32())
		}
		ANDL(U8(127), r[l].As32())
	}
	VMOVQ(Mem{Base: R12, Index: r[0], Scale: 8}, X8)
	VPINSRQ(U8(1), Mem{Base: R12, Index: r[1], Scale: 8}, X8, X8)
	VMOVQ(Mem{Base: R12, Index: r[2], Scale: 8}, X9)
	VPINSRQ(U8(1), Mem{Base: R12, Index: r[3], Scale: 8}, X9, X9)
	VINSERTI128(U8(1), X9, Y8, iqS)
}

// bitSigns loads into iqS the ±1 bytes of the 32 sign bits at m.
func bitSigns(m Mem) {
	VPBROADCASTD(m, iqS)
	VPSHUFB(iqBitsShuf, iqS, iqS)
	VPAND(iqBits, iqS, iqS)
	VPCMPEQB(iqBits, iqS, iqS)
	VPOR(iqOnes, iqS, iqS)
}

// oddScale28 sets every word of iqSC to 2·(EAX>>28)+1 (EAX clobbered).
func oddScale28() {
	SHRL(U8(28), EAX)
	LEAL(Mem{Base: RAX, Index: RAX, Scale: 1, Disp: 1}, EAX)
	VMOVD(EAX, iqSC.AsX())
	VPBROADCASTW(iqSC.AsX(), iqSC)
}

// nibbleScales sets the words of iqSC's low lane to 2·lo+1 and of its high
// lane to 2·hi+1, lo and hi the nibbles of the byte at m (clobbers AX, BX).
func nibbleScales(m Mem) {
	MOVBLZX(m, EAX)
	MOVL(EAX, EBX)
	ANDL(U8(15), EAX)
	SHRL(U8(4), EBX)
	LEAL(Mem{Base: RAX, Index: RAX, Scale: 1, Disp: 1}, EAX)
	LEAL(Mem{Base: RBX, Index: RBX, Scale: 1, Disp: 1}, EBX)
	VMOVD(EAX, iqSC.AsX())
	VPBROADCASTW(iqSC.AsX(), iqSC.AsX())
	VMOVD(EBX, X9)
	VPBROADCASTW(X9, X9)
	VINSERTI128(U8(1), X9, iqSC, iqSC)
}

// iq2xxsGroup: IQ2_XXS blocks are d, then per group 8 bytes: four
// codebook indexes and a dword of four seven-bit sign indexes and the
// scale in bits 28-31.
func iq2xxsGroup(ib int) {
	off := 2 + 8*ib
	idx := [4]GPPhysical{RAX, RBX, RDI, R13}
	for l, r := range idx {
		MOVBQZX(Mem{Base: RSI, Disp: off + l}, r)
	}
	grid64(idx)
	MOVL(Mem{Base: RSI, Disp: off + 4}, EAX)
	ksigns()
	oddScale28()
}

// iq2xsGroup: IQ2_XS blocks are d, per group four words (a nine-bit
// codebook index, a seven-bit sign index), then eight scale bytes (two
// nibbles per group).
func iq2xsGroup(ib int) {
	off := 2 + 8*ib
	idx := [4]GPPhysical{RAX, RBX, RDI, R13}
	for l, r := range idx {
		MOVWQZX(Mem{Base: RSI, Disp: off + 2*l}, r)
	}
	grid9(idx)
	nibbleScales(Mem{Base: RSI, Disp: 66 + ib})
}

// grid9 loads the codebook entries of the nine-bit indexes in the low bits
// of idx into iqG and the sign bytes of their top seven bits into iqS.
func grid9(idx [4]GPPhysical) {
	for l, r := range idx {
		MOVL(r.As32(), R14L)
		SHRL(U8(9), R14L)
		ANDL(U32(511), r.As32())
		if l%2 == 0 {
			VMOVQ(Mem{Base: R12, Index: R14, Scale: 8}, ys[14+l/2].AsX())
		} else {
			VPINSRQ(U8(1), Mem{Base: R12, Index: R14, Scale: 8}, ys[14+l/2].AsX(), ys[14+l/2].AsX())
		}
	}
	VINSERTI128(U8(1), X15, Y14, iqS)
	grid64(idx)
}

// iq2sIndexes stores IQ2_S's 32 ten-bit codebook indexes (IQ2_S blocks
// are d, 32 low index bytes, 32 sign bytes, eight qh bytes: bits 2l, 2l+1
// of qh[ib] are bits 8-9 of the group's index l, eight scale bytes):
// word i is qs[i] | (qh[i/4] << (8-2·(i%4))) & 0x300, sixteen at a time.
func iq2sIndexes() {
	for j := 0; j < 2; j++ {
		VPMOVZXBW(Mem{Base: RSI, Disp: 2 + 16*j}, Y8)
		VPBROADCASTD(Mem{Base: RSI, Disp: 66 + 4*j}, Y9)
		VPSHUFB(iqQhSel, Y9, Y9)
		VPMULLW(iqQhMul, Y9, Y9)
		VPAND(iqW300, Y9, Y9)
		VPOR(Y9, Y8, Y8)
		VMOVDQU(Y8, iqIdx.Offset(32*j))
	}
}

func iq2sGroup(ib int) {
	idx := [4]GPPhysical{RAX, RBX, RDI, R13}
	for l, r := range idx {
		MOVWLZX(iqIdx.Offset(8*ib+2*l), r.As32())
	}
	grid64(idx)
	bitSigns(Mem{Base: RSI, Disp: 34 + 4*ib})
	nibbleScales(Mem{Base: RSI, Disp: 74 + ib})
}

// iq3xxsGroup: IQ3_XXS blocks are d, 64 codebook index bytes (eight per
// group), then per group a dword as IQ2_XXS's second.
func iq3xxsGroup(ib int) {
	grid32(func(k int, r GPPhysical) { MOVBQZX(Mem{Base: RSI, Disp: 2 + 8*ib + k}, r) })
	MOVL(Mem{Base: RSI, Disp: 66 + 4*ib}, EAX)
	ksigns()
	oddScale28()
}

// iq3sGroup: IQ3_S blocks are d, 64 low index bytes, eight qh bytes (bit
// k of qh[ib] is bit 8 of the group's index k), 32 sign bytes, four scale
// bytes (a nibble per group). (Computing the indexes with vector
// instructions into the frame, as IQ2_S's, was slower here: 0.116 against
// 0.109 ns a weight.)
func iq3sGroup(ib int) {
	MOVBLZX(Mem{Base: RSI, Disp: 66 + ib}, R14L)
	grid32(func(k int, r GPPhysical) {
		MOVL(R14L, r.As32())
		SHLL(U8(8-k), r.As32())
		ANDL(U32(256), r.As32())
		MOVBLZX(Mem{Base: RSI, Disp: 2 + 8*ib + k}, R15L)
		ORL(R15L, r.As32())
	})
	bitSigns(Mem{Base: RSI, Disp: 74 + 4*ib})
	MOVBLZX(Mem{Base: RSI, Disp: 106 + ib/2}, EAX)
	if ib%2 == 1 {
		SHRL(U8(4), EAX)
	}
	ANDL(U8(15), EAX)
	LEAL(Mem{Base: RAX, Index: RAX, Scale: 1, Disp: 1}, EAX)
	VMOVD(EAX, iqSC.AsX())
	VPBROADCASTW(iqSC.AsX(), iqSC)
}
