//go:build amd64 && !purego

#include "textflag.h"

// AVX2/FMA/F16C kernels. Each mirrors the generic Go kernel of the same
// type (dot_generic.go) and ggml-cpu's AVX2 vec_dot: integer products with
// VPMADDUBSW/VPMADDWD on the quantised blocks, one float FMA per block.
// Callers guarantee the pointer arguments cover nb whole blocks.

DATA k4shuf<>+0(SB)/8, $0x0100010001000100
DATA k4shuf<>+8(SB)/8, $0x0100010001000100
DATA k4shuf<>+16(SB)/8, $0x0100010001000100
DATA k4shuf<>+24(SB)/8, $0x0100010001000100
DATA k4shuf<>+32(SB)/8, $0x0302030203020302
DATA k4shuf<>+40(SB)/8, $0x0302030203020302
DATA k4shuf<>+48(SB)/8, $0x0302030203020302
DATA k4shuf<>+56(SB)/8, $0x0302030203020302
DATA k4shuf<>+64(SB)/8, $0x0504050405040504
DATA k4shuf<>+72(SB)/8, $0x0504050405040504
DATA k4shuf<>+80(SB)/8, $0x0504050405040504
DATA k4shuf<>+88(SB)/8, $0x0504050405040504
DATA k4shuf<>+96(SB)/8, $0x0706070607060706
DATA k4shuf<>+104(SB)/8, $0x0706070607060706
DATA k4shuf<>+112(SB)/8, $0x0706070607060706
DATA k4shuf<>+120(SB)/8, $0x0706070607060706
DATA k4shuf<>+128(SB)/8, $0x0908090809080908
DATA k4shuf<>+136(SB)/8, $0x0908090809080908
DATA k4shuf<>+144(SB)/8, $0x0908090809080908
DATA k4shuf<>+152(SB)/8, $0x0908090809080908
DATA k4shuf<>+160(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+168(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+176(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+184(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA k4shuf<>+192(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+200(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+208(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+216(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA k4shuf<>+224(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+232(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+240(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA k4shuf<>+248(SB)/8, $0x0f0e0f0e0f0e0f0e
GLOBL k4shuf<>(SB), RODATA|NOPTR, $256

DATA q6shuf<>+0(SB)/8, $0x0000000000000000
DATA q6shuf<>+8(SB)/8, $0x0101010101010101
DATA q6shuf<>+16(SB)/8, $0x0202020202020202
DATA q6shuf<>+24(SB)/8, $0x0303030303030303
DATA q6shuf<>+32(SB)/8, $0x0404040404040404
DATA q6shuf<>+40(SB)/8, $0x0505050505050505
DATA q6shuf<>+48(SB)/8, $0x0606060606060606
DATA q6shuf<>+56(SB)/8, $0x0707070707070707
DATA q6shuf<>+64(SB)/8, $0x0808080808080808
DATA q6shuf<>+72(SB)/8, $0x0909090909090909
DATA q6shuf<>+80(SB)/8, $0x0a0a0a0a0a0a0a0a
DATA q6shuf<>+88(SB)/8, $0x0b0b0b0b0b0b0b0b
DATA q6shuf<>+96(SB)/8, $0x0c0c0c0c0c0c0c0c
DATA q6shuf<>+104(SB)/8, $0x0d0d0d0d0d0d0d0d
DATA q6shuf<>+112(SB)/8, $0x0e0e0e0e0e0e0e0e
DATA q6shuf<>+120(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL q6shuf<>(SB), RODATA|NOPTR, $128

// Horizontal sum of the 8 floats of ACC into X5 in ggml's hsum_float_8
// order ((hi+lo), then pairs, then the last two); clobbers X6. Every
// quantised kernel and its four-vector twin reduce this way, so both give
// bit-identical results.
#define HSUM8(ACC, XACC) \
	VEXTRACTF128 $1, ACC, X5 \
	VADDPS XACC, X5, X5 \
	VMOVHLPS X5, X5, X6 \
	VADDPS X6, X5, X5 \
	VMOVSHDUP X5, X6 \
	VADDSS X6, X5, X5

// SUM4F32 adds the four float accumulators Y0..Y3 of the F32 and F16
// kernels into X0's lane 0: (Y0+Y1)+(Y2+Y3), then ggml's hsum order.
#define SUM4F32 \
	VADDPS Y1, Y0, Y0 \
	VADDPS Y3, Y2, Y2 \
	VADDPS Y2, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS X1, X0, X0 \
	VHADDPS X0, X0, X0 \
	VHADDPS X0, X0, X0

// func dotF16AVX2(a, b *byte, n int) float32
// a and b hold n halves; n must be a multiple of 8.
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
f16loop32:
	CMPQ CX, $32
	JLT  f16loop8
	VCVTPH2PS (SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VCVTPH2PS (DI), Y8
	VCVTPH2PS 16(DI), Y9
	VCVTPH2PS 32(DI), Y10
	VCVTPH2PS 48(DI), Y11
	VFMADD231PS Y8, Y4, Y0
	VFMADD231PS Y9, Y5, Y1
	VFMADD231PS Y10, Y6, Y2
	VFMADD231PS Y11, Y7, Y3
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $32, CX
	JMP  f16loop32
f16loop8:
	CMPQ CX, $8
	JLT  f16done
	VCVTPH2PS (SI), Y4
	VCVTPH2PS (DI), Y8
	VFMADD231PS Y8, Y4, Y0
	ADDQ $16, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP  f16loop8
f16done:
	SUM4F32
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// Block product of 32 signed weight bytes in Y2 with the 32 activation
// bytes at off(DI), scaled by the float in X1 and accumulated into ACC.
// Uses Y4-Y6; Y15 must hold int16 ones.
#define Q8BLOCK(off, ACC) \
	VMOVDQU off(DI), Y3 \
	VPSIGNB Y2, Y2, Y4 \
	VPSIGNB Y2, Y3, Y5 \
	VPMADDUBSW Y5, Y4, Y6 \
	VPMADDWD Y15, Y6, Y6 \
	VCVTDQ2PS Y6, Y6 \
	VBROADCASTSS X1, Y1 \
	VFMADD231PS Y6, Y1, ACC

// Loads the product of the f16 scales at (SI) and (DI) into X1.
#define SCALES \
	MOVWLZX (SI), AX \
	MOVWLZX (DI), BX \
	VMOVD AX, X1 \
	VMOVD BX, X7 \
	VCVTPH2PS X1, X1 \
	VCVTPH2PS X7, X7 \
	VMULSS X7, X1, X1

// func dotQ8_0AVX2(nb int, w, x *byte) float32
TEXT ·dotQ8_0AVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	VPCMPEQW Y15, Y15, Y15
	VPSRLW $15, Y15, Y15
q8loop:
	TESTQ CX, CX
	JEQ  q8done
	SCALES
	VMOVDQU 2(SI), Y2
	Q8BLOCK(2, Y0)
	ADDQ $34, SI
	ADDQ $34, DI
	DECQ CX
	JMP  q8loop
q8done:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// Expands the 16 nibble bytes at 2(SI) into 32 signed bytes (q-8) in Y2.
// Y14 must hold 0x0F bytes, Y13 0x08 bytes.
#define Q4EXPAND \
	VMOVDQU 2(SI), X2 \
	VPSRLW $4, X2, X3 \
	VINSERTI128 $1, X3, Y2, Y2 \
	VPAND Y14, Y2, Y2 \
	VPSUBB Y13, Y2, Y2

// func dotQ4_0AVX2(nb int, w, x *byte) float32
TEXT ·dotQ4_0AVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	VPCMPEQW Y15, Y15, Y15
	VPSRLW $15, Y15, Y15
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x08080808, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
q4loop:
	TESTQ CX, CX
	JEQ  q4done
	SCALES
	Q4EXPAND
	Q8BLOCK(2, Y0)
	ADDQ $18, SI
	ADDQ $34, DI
	DECQ CX
	JMP  q4loop
q4done:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// func dotQ4KAVX2(nb int, w, x *byte) float32
// w: Q4_K blocks (d, dmin, scales[12], qs[128]); x: Q8_K blocks
// (d float32, qs[256], bsums[16] int16).
TEXT ·dotQ4KAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0          // acc
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	TESTQ CX, CX
	JEQ  q4kdone
q4kloop:
	// d = y.d * x.d ; dmin = -(y.d * x.dmin)
	MOVWLZX (SI), AX
	MOVWLZX 2(SI), BX
	VMOVD AX, X1
	VMOVD BX, X2
	VCVTPH2PS X1, X1
	VCVTPH2PS X2, X2
	VMOVSS (DI), X3
	VMULSS X3, X1, X1          // d
	VMULSS X3, X2, X2          // dmin (positive)
	// unpack scales/mins: utmp0..2 = scales[0:12]
	MOVL 4(SI), AX             // utmp0
	MOVL 8(SI), BX             // utmp1
	MOVL 12(SI), DX            // utmp2
	// utmp3 = ((utmp2 >> 4) & 0x0f0f0f0f) | (((utmp1 >> 6) & 0x03030303) << 4)
	MOVL DX, R8
	SHRL $4, R8
	ANDL $0x0f0f0f0f, R8
	MOVL BX, R9
	SHRL $6, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, R8                // R8 = utmp3
	// uaux = utmp1 & 0x3f3f3f3f
	MOVL BX, R10
	ANDL $0x3f3f3f3f, R10      // R10 = uaux = new utmp2
	// utmp1 = (utmp2 & 0x0f0f0f0f) | (((utmp0 >> 6) & 0x03030303) << 4)
	ANDL $0x0f0f0f0f, DX
	MOVL AX, R9
	SHRL $6, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, DX                // DX = new utmp1
	ANDL $0x3f3f3f3f, AX       // AX = new utmp0
	// scales: AX | DX<<32 ; mins: R10 | R8<<32
	SHLQ $32, DX
	ORQ  DX, AX
	SHLQ $32, R8
	ORQ  R8, R10
	VMOVQ AX, X4
	VPMOVZXBW X4, X4           // 8 int16 scales
	VINSERTI128 $1, X4, Y4, Y4 // replicated in both lanes
	VMOVQ R10, X5
	VPMOVZXBW X5, X5           // 8 int16 mins
	// mins: madd(mins, hadd(bsums lo, bsums hi))
	VMOVDQU 260(DI), X6
	VPHADDW 276(DI), X6, X6
	VPMADDWD X6, X5, X5        // VEX.128: upper half of Y5 is zero
	VCVTDQ2PS Y5, Y5
	VBROADCASTSS X2, Y2
	VFNMADD231PS Y5, Y2, Y0    // acc -= dmin*y.d * sum(mins*bsums)
	// sums over the 4 groups of 64
	VPXOR Y9, Y9, Y9           // sumi
	LEAQ 16(SI), R11           // q4
	LEAQ 4(DI), R12            // q8
	MOVQ $0, R13
	LEAQ k4shuf<>(SB), R14
q4kinner:
	VPSHUFB (R14), Y4, Y10     // scale_l
	VPSHUFB 32(R14), Y4, Y11   // scale_h
	VMOVDQU (R11), Y2
	VPSRLW $4, Y2, Y3
	VPAND Y14, Y2, Y2          // q4l
	VPAND Y14, Y3, Y3          // q4h
	VPMADDUBSW (R12), Y2, Y2
	VPMADDWD Y10, Y2, Y2
	VPMADDUBSW 32(R12), Y3, Y3
	VPMADDWD Y11, Y3, Y3
	VPADDD Y2, Y9, Y9
	VPADDD Y3, Y9, Y9
	ADDQ $32, R11
	ADDQ $64, R12
	ADDQ $64, R14
	INCQ R13
	CMPQ R13, $4
	JLT  q4kinner
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $144, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q4kloop
q4kdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// func dotQ6KAVX2(nb int, w, x *byte) float32
// w: Q6_K blocks (ql[128], qh[64], scales[16] int8, d); x: Q8_K blocks.
TEXT ·dotQ6KAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14      // m4
	MOVL $0x03030303, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13      // m2
	TESTQ CX, CX
	JEQ  q6kdone
q6kloop:
	MOVWLZX 208(SI), AX
	VMOVD AX, X1
	VCVTPH2PS X1, X1
	VMULSS (DI), X1, X1        // d
	VMOVDQU 192(SI), X15       // 16 int8 scales
	VPXOR Y9, Y9, Y9           // sumi
	MOVQ SI, R11               // ql
	LEAQ 128(SI), R10          // qh
	LEAQ 4(DI), R12            // q8
	LEAQ q6shuf<>(SB), R14
	MOVQ $0, R13
q6kinner:
	VMOVDQU (R11), Y2          // q4bits1
	VMOVDQU 32(R11), Y3        // q4bits2
	VMOVDQU (R10), Y4          // q4bitsH
	// high parts
	VPAND Y13, Y4, Y5
	VPSLLW $4, Y5, Y5          // q4h_0
	VPSRLW $2, Y4, Y6
	VPAND Y13, Y6, Y6
	VPSLLW $4, Y6, Y6          // q4h_1
	VPSRLW $4, Y4, Y7
	VPAND Y13, Y7, Y7
	VPSLLW $4, Y7, Y7          // q4h_2
	VPSRLW $6, Y4, Y8
	VPAND Y13, Y8, Y8
	VPSLLW $4, Y8, Y8          // q4h_3
	// q4_0 = (q4bits1 & m4) | q4h_0 ; q4_2 = ((q4bits1>>4) & m4) | q4h_2
	VPAND Y14, Y2, Y10
	VPOR Y5, Y10, Y10          // q4_0
	VPSRLW $4, Y2, Y2
	VPAND Y14, Y2, Y2
	VPOR Y7, Y2, Y7            // q4_2 in Y7
	VPAND Y14, Y3, Y11
	VPOR Y6, Y11, Y11          // q4_1
	VPSRLW $4, Y3, Y3
	VPAND Y14, Y3, Y3
	VPOR Y8, Y3, Y8            // q4_3 in Y8
	// k = 0: q4_0 (Y10) with q8[0:32]
	VPMADDUBSW (R12), Y10, Y10
	VPSHUFB (R14), X15, X4
	VPMOVSXBW X4, Y4
	VPMADDWD Y4, Y10, Y10
	VPADDD Y10, Y9, Y9
	// k = 1: q4_1 (Y11) with q8[32:64]
	VPMADDUBSW 32(R12), Y11, Y11
	VPSHUFB 16(R14), X15, X4
	VPMOVSXBW X4, Y4
	VPMADDWD Y4, Y11, Y11
	VPADDD Y11, Y9, Y9
	// k = 2: q4_2 (Y7) with q8[64:96]
	VPMADDUBSW 64(R12), Y7, Y7
	VPSHUFB 32(R14), X15, X4
	VPMOVSXBW X4, Y4
	VPMADDWD Y4, Y7, Y7
	VPADDD Y7, Y9, Y9
	// k = 3: q4_3 (Y8) with q8[96:128]
	VPMADDUBSW 96(R12), Y8, Y8
	VPSHUFB 48(R14), X15, X4
	VPMOVSXBW X4, Y4
	VPMADDWD Y4, Y8, Y8
	VPADDD Y8, Y9, Y9
	ADDQ $64, R11
	ADDQ $32, R10
	ADDQ $128, R12
	ADDQ $64, R14
	INCQ R13
	CMPQ R13, $2
	JLT  q6kinner
	// the -32 offset of every value: sumi -= 32 * sum_k scale_k * bsum_k
	VPMOVSXBW 192(SI), Y2
	VPMADDWD 260(DI), Y2, Y12
	VPSLLD $5, Y12, Y12
	VPSUBD Y12, Y9, Y9
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $210, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q6kloop
q6kdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

DATA iq4nlvals<>+0(SB)/8, $0xf6eaddcfbfad9881
DATA iq4nlvals<>+8(SB)/8, $0x7159453526190d01
DATA iq4nlvals<>+16(SB)/8, $0xf6eaddcfbfad9881
DATA iq4nlvals<>+24(SB)/8, $0x7159453526190d01
GLOBL iq4nlvals<>(SB), RODATA|NOPTR, $32

DATA bitsshuf<>+0(SB)/8, $0x0000000000000000
DATA bitsshuf<>+8(SB)/8, $0x0101010101010101
DATA bitsshuf<>+16(SB)/8, $0x0202020202020202
DATA bitsshuf<>+24(SB)/8, $0x0303030303030303
GLOBL bitsshuf<>(SB), RODATA|NOPTR, $32

DATA bitsmask<>+0(SB)/8, $0x7fbfdfeff7fbfdfe
DATA bitsmask<>+8(SB)/8, $0x7fbfdfeff7fbfdfe
DATA bitsmask<>+16(SB)/8, $0x7fbfdfeff7fbfdfe
DATA bitsmask<>+24(SB)/8, $0x7fbfdfeff7fbfdfe
GLOBL bitsmask<>(SB), RODATA|NOPTR, $32

// Expands the 32 bits of qh at off(SI) into 32 bytes (0xFF where the bit
// is set) in Y3, like ggml's bytes_from_bits_32. Needs Y13 = bitsshuf,
// Y12 = bitsmask, Y11 = all ones.
#define BITS32(off) \
	MOVL off(SI), AX \
	VMOVD AX, X3 \
	VPBROADCASTD X3, Y3 \
	VPSHUFB Y13, Y3, Y3 \
	VPOR Y12, Y3, Y3 \
	VPCMPEQB Y11, Y3, Y3

// Expands the 16 nibble bytes at off(SI) into 32 bytes 0..15 in Y2
// (low nibbles first). Y14 must hold 0x0F bytes.
#define NIBBLES(off) \
	VMOVDQU off(SI), X2 \
	VPSRLW $4, X2, X3 \
	VINSERTI128 $1, X3, Y2, Y2 \
	VPAND Y14, Y2, Y2

#define LOADCONSTS \
	VPCMPEQW Y15, Y15, Y15 \
	VPSRLW $15, Y15, Y15 \
	MOVL $0x0F0F0F0F, AX \
	VMOVD AX, X14 \
	VPBROADCASTD X14, Y14 \
	VMOVDQU bitsshuf<>(SB), Y13 \
	VMOVDQU bitsmask<>(SB), Y12 \
	VPCMPEQB Y11, Y11, Y11

// Signed weights in Y2 times signed activations at off(DI), scaled by X1,
// accumulated into Y0.
#define SDOT(off) \
	VMOVDQU off(DI), Y3 \
	VPSIGNB Y2, Y2, Y4 \
	VPSIGNB Y2, Y3, Y5 \
	VPMADDUBSW Y5, Y4, Y6 \
	VPMADDWD Y15, Y6, Y6 \
	VCVTDQ2PS Y6, Y6 \
	VBROADCASTSS X1, Y1 \
	VFMADD231PS Y6, Y1, Y0

// Unsigned weights in Y2 times signed activations at off(DI).
#define UDOT(off) \
	VPMADDUBSW off(DI), Y2, Y6 \
	VPMADDWD Y15, Y6, Y6 \
	VCVTDQ2PS Y6, Y6 \
	VBROADCASTSS X1, Y1 \
	VFMADD231PS Y6, Y1, Y0

// X1 = f16(wOff(SI)) * f16(xOff(DI)).
#define SCALES2(wOff, xOff) \
	MOVWLZX wOff(SI), AX \
	MOVWLZX xOff(DI), BX \
	VMOVD AX, X1 \
	VMOVD BX, X7 \
	VCVTPH2PS X1, X1 \
	VCVTPH2PS X7, X7 \
	VMULSS X7, X1, X1

// X8 += f16(wOff(SI)) * f16(xOff(DI)) (the min term of Q4_1/Q5_1); clobbers Y5, Y6.
#define MINTERM(wOff, xOff) \
	MOVWLZX wOff(SI), AX \
	MOVWLZX xOff(DI), BX \
	VMOVD AX, X5 \
	VMOVD BX, X6 \
	VCVTPH2PS X5, X5 \
	VCVTPH2PS X6, X6 \
	VFMADD231SS X6, X5, X8

// func dotIQ4NLAVX2(nb int, w, x *byte) float32
TEXT ·dotIQ4NLAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	LOADCONSTS
	VMOVDQU iq4nlvals<>(SB), Y10
	TESTQ CX, CX
	JEQ  iq4nldone
iq4nlloop:
	SCALES2(0, 0)
	NIBBLES(2)
	VPSHUFB Y2, Y10, Y2
	SDOT(2)
	ADDQ $18, SI
	ADDQ $34, DI
	DECQ CX
	JNZ  iq4nlloop
iq4nldone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// func dotQ5_0AVX2(nb int, w, x *byte) float32
TEXT ·dotQ5_0AVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	LOADCONSTS
	MOVL $0xF0F0F0F0, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	TESTQ CX, CX
	JEQ  q50done
q50loop:
	SCALES2(0, 0)
	NIBBLES(6)
	BITS32(2)
	VPANDN Y10, Y3, Y3         // 0xF0 where the high bit is 0: q - 16
	VPOR Y3, Y2, Y2
	SDOT(2)
	ADDQ $22, SI
	ADDQ $34, DI
	DECQ CX
	JNZ  q50loop
q50done:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// func dotQ4_1AVX2(nb int, w, x *byte) float32
TEXT ·dotQ4_1AVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS X8, X8, X8
	LOADCONSTS
	TESTQ CX, CX
	JEQ  q41done
q41loop:
	SCALES2(0, 0)
	MINTERM(2, 2)
	NIBBLES(4)
	UDOT(4)
	ADDQ $20, SI
	ADDQ $36, DI
	DECQ CX
	JNZ  q41loop
q41done:
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS X8, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotQ5_1AVX2(nb int, w, x *byte) float32
TEXT ·dotQ5_1AVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS X8, X8, X8
	LOADCONSTS
	MOVL $0x10101010, AX
	VMOVD AX, X10
	VPBROADCASTD X10, Y10
	TESTQ CX, CX
	JEQ  q51done
q51loop:
	SCALES2(0, 0)
	MINTERM(2, 2)
	NIBBLES(8)
	BITS32(4)
	VPAND Y10, Y3, Y3
	VPOR Y3, Y2, Y2
	UDOT(4)
	ADDQ $24, SI
	ADDQ $36, DI
	DECQ CX
	JNZ  q51loop
q51done:
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VADDSS X8, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotBF16AVX2(a, b *byte, n int) float32
// n must be a multiple of 8.
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
bf16loop16:
	CMPQ CX, $16
	JLT  bf16loop8
	VPMOVZXWD (SI), Y4
	VPMOVZXWD 16(SI), Y5
	VPMOVZXWD (DI), Y6
	VPMOVZXWD 16(DI), Y7
	VPSLLD $16, Y4, Y4
	VPSLLD $16, Y5, Y5
	VPSLLD $16, Y6, Y6
	VPSLLD $16, Y7, Y7
	VFMADD231PS Y6, Y4, Y0
	VFMADD231PS Y7, Y5, Y1
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $16, CX
	JMP  bf16loop16
bf16loop8:
	CMPQ CX, $8
	JLT  bf16done
	VPMOVZXWD (SI), Y4
	VPMOVZXWD (DI), Y6
	VPSLLD $16, Y4, Y4
	VPSLLD $16, Y6, Y6
	VFMADD231PS Y6, Y4, Y0
	ADDQ $16, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP  bf16loop8
bf16done:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// One 64-element group of Q5_K: low/high nibbles of 32 bytes at qoff(R11),
// high bits b0/b1 of the qh bytes in Y13, activations at q8off(R12),
// scales shuffles at soff(R14). Accumulates int32 into Y9.
#define Q5KGROUP(qoff, q8off, soff, sh0, sh1) \
	VPSHUFB soff(R14), Y4, Y10 \
	VPSHUFB soff+32(R14), Y4, Y11 \
	VMOVDQU qoff(R11), Y2 \
	VPSRLW $4, Y2, Y3 \
	VPAND Y14, Y2, Y2 \
	VPAND Y14, Y3, Y3 \
	VPSRLW $sh0, Y13, Y5 \
	VPAND Y12, Y5, Y5 \
	VPSLLW $4, Y5, Y5 \
	VPOR Y5, Y2, Y2 \
	VPSRLW $sh1, Y13, Y6 \
	VPAND Y12, Y6, Y6 \
	VPSLLW $4, Y6, Y6 \
	VPOR Y6, Y3, Y3 \
	VPMADDUBSW q8off(R12), Y2, Y2 \
	VPMADDWD Y10, Y2, Y2 \
	VPMADDUBSW q8off+32(R12), Y3, Y3 \
	VPMADDWD Y11, Y3, Y3 \
	VPADDD Y2, Y9, Y9 \
	VPADDD Y3, Y9, Y9

// func dotQ5KAVX2(nb int, w, x *byte) float32
// w: Q5_K blocks (d, dmin, scales[12], qh[32], qs[128]); x: Q8_K blocks.
TEXT ·dotQ5KAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x01010101, AX
	VMOVD AX, X12
	VPBROADCASTD X12, Y12
	TESTQ CX, CX
	JEQ  q5kdone
q5kloop:
	MOVWLZX (SI), AX
	MOVWLZX 2(SI), BX
	VMOVD AX, X1
	VMOVD BX, X2
	VCVTPH2PS X1, X1
	VCVTPH2PS X2, X2
	VMOVSS (DI), X3
	VMULSS X3, X1, X1
	VMULSS X3, X2, X2
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL DX, R8
	SHRL $4, R8
	ANDL $0x0f0f0f0f, R8
	MOVL BX, R9
	SHRL $6, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, R8
	MOVL BX, R10
	ANDL $0x3f3f3f3f, R10
	ANDL $0x0f0f0f0f, DX
	MOVL AX, R9
	SHRL $6, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, DX
	ANDL $0x3f3f3f3f, AX
	SHLQ $32, DX
	ORQ  DX, AX
	SHLQ $32, R8
	ORQ  R8, R10
	VMOVQ AX, X4
	VPMOVZXBW X4, X4
	VINSERTI128 $1, X4, Y4, Y4
	VMOVQ R10, X5
	VPMOVZXBW X5, X5
	VMOVDQU 260(DI), X6
	VPHADDW 276(DI), X6, X6
	VPMADDWD X6, X5, X5        // VEX.128: upper half of Y5 is zero
	VCVTDQ2PS Y5, Y5
	VBROADCASTSS X2, Y2
	VFNMADD231PS Y5, Y2, Y0    // acc -= dmin*y.d * sum(mins*bsums)
	VMOVDQU 16(SI), Y13        // qh
	VPXOR Y9, Y9, Y9
	LEAQ 48(SI), R11
	LEAQ 4(DI), R12
	LEAQ k4shuf<>(SB), R14
	Q5KGROUP(0, 0, 0, 0, 1)
	Q5KGROUP(32, 64, 64, 2, 3)
	Q5KGROUP(64, 128, 128, 4, 5)
	Q5KGROUP(96, 192, 192, 6, 7)
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $176, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q5kloop
q5kdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// func dotIQ4XSAVX2(nb int, w, x *byte) float32
// w: IQ4_XS blocks (d, scales_h u16, scales_l[4], qs[128]); x: Q8_K blocks.
TEXT ·dotIQ4XSAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	VPCMPEQW Y15, Y15, Y15
	VPSRLW $15, Y15, Y15
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	VMOVDQU iq4nlvals<>(SB), Y10
	TESTQ CX, CX
	JEQ  iq4xsdone
iq4xsloop:
	MOVWLZX (SI), AX
	VMOVD AX, X1
	VCVTPH2PS X1, X1
	VMULSS (DI), X1, X1
	MOVWLZX 2(SI), R8          // scales_h
	MOVL 4(SI), R9             // scales_l[0:4]
	VPXOR Y9, Y9, Y9
	LEAQ 8(SI), R11
	LEAQ 4(DI), R12
	MOVQ $0, R13
iq4xsinner:
	// ls = ((scales_l >> 4*ib) & 0xf) | (((scales_h >> 2*ib) & 3) << 4), minus 32
	MOVL R9, AX
	ANDL $0xf, AX
	MOVL R8, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R9
	SHRL $2, R8
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU (R11), X2
	VPSRLW $4, X2, X3
	VINSERTI128 $1, X3, Y2, Y2
	VPAND Y14, Y2, Y2
	VPSHUFB Y2, Y10, Y2
	VMOVDQU (R12), Y3
	VPSIGNB Y2, Y2, Y4
	VPSIGNB Y2, Y3, Y6
	VPMADDUBSW Y6, Y4, Y6
	VPMADDWD Y5, Y6, Y6
	VPADDD Y6, Y9, Y9
	ADDQ $16, R11
	ADDQ $32, R12
	INCQ R13
	CMPQ R13, $8
	JLT  iq4xsinner
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $136, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  iq4xsloop
iq4xsdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

DATA q3shuf<>+0(SB)/8, $0x0100010001000100
DATA q3shuf<>+8(SB)/8, $0x0100010001000100
DATA q3shuf<>+16(SB)/8, $0x0302030203020302
DATA q3shuf<>+24(SB)/8, $0x0302030203020302
DATA q3shuf<>+32(SB)/8, $0x0504050405040504
DATA q3shuf<>+40(SB)/8, $0x0504050405040504
DATA q3shuf<>+48(SB)/8, $0x0706070607060706
DATA q3shuf<>+56(SB)/8, $0x0706070607060706
DATA q3shuf<>+64(SB)/8, $0x0908090809080908
DATA q3shuf<>+72(SB)/8, $0x0908090809080908
DATA q3shuf<>+80(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA q3shuf<>+88(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA q3shuf<>+96(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA q3shuf<>+104(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA q3shuf<>+112(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA q3shuf<>+120(SB)/8, $0x0f0e0f0e0f0e0f0e
GLOBL q3shuf<>(SB), RODATA|NOPTR, $128

// One 32-byte group of 2-bit values: (Y2 >> shift) & 3 times activations at
// q8off(R12), scaled by the int16 scales selected by soff(R14) from SC.
// Accumulates into Y9. Y13 = 0x03 bytes.
#define Q2GROUP(shift, q8off, soff, SC) \
	VPSRLW $shift, Y2, Y3 \
	VPAND Y13, Y3, Y3 \
	VPMADDUBSW q8off(R12), Y3, Y3 \
	VPSHUFB soff(R14), SC, Y5 \
	VPMADDWD Y5, Y3, Y3 \
	VPADDD Y3, Y9, Y9

// func dotQ2KAVX2(nb int, w, x *byte) float32
// w: Q2_K blocks (scales[16], qs[64], d, dmin); x: Q8_K blocks.
TEXT ·dotQ2KAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x03030303, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	LEAQ q3shuf<>(SB), R14
	TESTQ CX, CX
	JEQ  q2kdone
q2kloop:
	MOVWLZX 80(SI), AX
	MOVWLZX 82(SI), BX
	VMOVD AX, X1
	VMOVD BX, X2
	VCVTPH2PS X1, X1
	VCVTPH2PS X2, X2
	VMOVSS (DI), X3
	VMULSS X3, X1, X1          // d
	VMULSS X3, X2, X2          // dmin
	VMOVDQU (SI), X4
	VPSRLW $4, X4, X5
	VPAND X14, X5, X5          // mins8
	VPAND X14, X4, X4          // scales8
	VPMOVZXBW X5, Y5
	VPMADDWD 260(DI), Y5, Y5
	VCVTDQ2PS Y5, Y5
	VBROADCASTSS X2, Y2
	VFNMADD231PS Y5, Y2, Y0    // acc -= dmin*y.d * sum(mins*bsums)
	VPMOVZXBW X4, Y4
	VINSERTI128 $1, X4, Y4, Y10 // low 8 scales in both lanes
	VEXTRACTI128 $1, Y4, X11
	VINSERTI128 $1, X11, Y11, Y11 // high 8 scales in both lanes
	VPXOR Y9, Y9, Y9
	LEAQ 4(DI), R12
	VMOVDQU 16(SI), Y2
	Q2GROUP(0, 0, 0, Y10)
	Q2GROUP(2, 32, 32, Y10)
	Q2GROUP(4, 64, 64, Y10)
	Q2GROUP(6, 96, 96, Y10)
	VMOVDQU 48(SI), Y2
	Q2GROUP(0, 128, 0, Y11)
	Q2GROUP(2, 160, 32, Y11)
	Q2GROUP(4, 192, 64, Y11)
	Q2GROUP(6, 224, 96, Y11)
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $84, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q2kloop
q2kdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// One 32-byte group of Q3_K: low bits (Y2 >> shift) & 3, minus 4 where
// bit hbit of ~hmask (Y15) is set; activations at q8off(R12); scales as in
// Q2GROUP. Y13 = 0x03 bytes, Y12 = 0x01 bytes.
#define Q3GROUP(shift, hbit, q8off, soff, SC) \
	VPSRLW $shift, Y2, Y3 \
	VPAND Y13, Y3, Y3 \
	VPSRLW $hbit, Y15, Y4 \
	VPAND Y12, Y4, Y4 \
	VPSLLW $2, Y4, Y4 \
	VMOVDQU q8off(R12), Y6 \
	VPMADDUBSW Y6, Y3, Y3 \
	VPMADDUBSW Y6, Y4, Y4 \
	VPSUBW Y4, Y3, Y3 \
	VPSHUFB soff(R14), SC, Y5 \
	VPMADDWD Y5, Y3, Y3 \
	VPADDD Y3, Y9, Y9

// func dotQ3KAVX2(nb int, w, x *byte) float32
// w: Q3_K blocks (hmask[32], qs[64], scales[12], d); x: Q8_K blocks.
TEXT ·dotQ3KAVX2(SB), NOSPLIT, $0-28
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), DI
	VXORPS Y0, Y0, Y0
	MOVL $0x03030303, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVL $0x01010101, AX
	VMOVD AX, X12
	VPBROADCASTD X12, Y12
	MOVL $0x20202020, AX
	VMOVD AX, X14
	VPBROADCASTD X14, X14      // 32s (xmm)
	VPCMPEQB Y7, Y7, Y7        // all ones
	LEAQ q3shuf<>(SB), R14
	TESTQ CX, CX
	JEQ  q3kdone
q3kloop:
	MOVWLZX 108(SI), AX
	VMOVD AX, X1
	VCVTPH2PS X1, X1
	VMULSS (DI), X1, X1        // d
	MOVL 96(SI), AX            // aux0
	MOVL 100(SI), BX           // aux1
	MOVL 104(SI), DX           // aux2
	// s0 = (aux0 & k2) | ((aux2 & k1) << 4)
	MOVL AX, R8
	ANDL $0x0f0f0f0f, R8
	MOVL DX, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, R8
	// s1 = (aux1 & k2) | (((aux2 >> 2) & k1) << 4)
	MOVL BX, R10
	ANDL $0x0f0f0f0f, R10
	MOVL DX, R9
	SHRL $2, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, R10
	SHLQ $32, R10
	ORQ  R10, R8               // R8 = s0 | s1<<32
	// s2 = ((aux0 >> 4) & k2) | (((aux2 >> 4) & k1) << 4)
	SHRL $4, AX
	ANDL $0x0f0f0f0f, AX
	MOVL DX, R9
	SHRL $4, R9
	ANDL $0x03030303, R9
	SHLL $4, R9
	ORL  R9, AX
	// s3 = ((aux1 >> 4) & k2) | (((aux2 >> 6) & k1) << 4)
	SHRL $4, BX
	ANDL $0x0f0f0f0f, BX
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, BX
	SHLQ $32, BX
	ORQ  BX, AX                // AX = s2 | s3<<32
	VMOVQ R8, X4
	VPINSRQ $1, AX, X4, X4
	VPSUBB X14, X4, X4
	VPMOVSXBW X4, Y4
	VINSERTI128 $1, X4, Y4, Y10
	VEXTRACTI128 $1, Y4, X11
	VINSERTI128 $1, X11, Y11, Y11
	VMOVDQU (SI), Y15
	VPXOR Y7, Y15, Y15         // ~hmask
	VPXOR Y9, Y9, Y9
	LEAQ 4(DI), R12
	VMOVDQU 32(SI), Y2
	Q3GROUP(0, 0, 0, 0, Y10)
	Q3GROUP(2, 1, 32, 32, Y10)
	Q3GROUP(4, 2, 64, 64, Y10)
	Q3GROUP(6, 3, 96, 96, Y10)
	VMOVDQU 64(SI), Y2
	Q3GROUP(0, 4, 128, 0, Y11)
	Q3GROUP(2, 5, 160, 32, Y11)
	Q3GROUP(4, 6, 192, 64, Y11)
	Q3GROUP(6, 7, 224, 96, Y11)
	VCVTDQ2PS Y9, Y9
	VBROADCASTSS X1, Y1
	VFMADD231PS Y9, Y1, Y0
	ADDQ $110, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q3kloop
q3kdone:
	HSUM8(Y0, X0)
	VZEROUPPER
	MOVSS X5, ret+24(FP)
	RET

// One 64-element group of Q4_K against vector v: activations at
// goff(XR)/goff+32(XR), nibbles in Y12/Y13, scales in Y6/Y7; sum into SUM.
#define Q4KX4GROUP(XR, goff, SUM) \
	VPMADDUBSW goff(XR), Y12, Y5 \
	VPMADDWD Y6, Y5, Y5 \
	VPADDD Y5, SUM, SUM \
	VPMADDUBSW goff+32(XR), Y13, Y5 \
	VPMADDWD Y7, Y5, Y5 \
	VPADDD Y5, SUM, SUM

// Mins term of vector v: ACC -= (y.d * dmin) * sum_j mins[j]*bsums(j), using
// X4 = 8 int16 mins and X15 = f16 dmin as float; clobbers Y5, Y6.
#define Q4KX4MINS(XR, ACC) \
	VMOVDQU 260(XR), X5 \
	VPHADDW 276(XR), X5, X5 \
	VPMADDWD X5, X4, X5 \
	VCVTDQ2PS Y5, Y5 \
	VMULSS (XR), X15, X6 \
	VBROADCASTSS X6, Y6 \
	VFNMADD231PS Y5, Y6, ACC

// Block scale of vector v: ACC += (y.d * d) * float(SUM); X14 = f16 d as float.
#define Q4KX4FIN(XR, SUM, ACC) \
	VCVTDQ2PS SUM, SUM \
	VMULSS (XR), X14, X5 \
	VBROADCASTSS X5, Y5 \
	VFMADD231PS SUM, Y5, ACC

// Horizontal sum of ACC into X5 (ggml's hsum_float_8 order) and store to off(DX).
#define HSUMSTORE(ACC, XACC, off) \
	VEXTRACTF128 $1, ACC, X5 \
	VADDPS XACC, X5, X5 \
	VMOVHLPS X5, X5, X6 \
	VADDPS X6, X5, X5 \
	VMOVSHDUP X5, X6 \
	VADDSS X6, X5, X5 \
	VMOVSS X5, off(DX)

// func dotQ4Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Four activation rows (Q8_K, xstride bytes apart) against one Q4_K row:
// the weights are unpacked once per group and used for all four.
TEXT ·dotQ4Kx4AVX2(SB), NOSPLIT, $0-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	TESTQ CX, CX
	JEQ  q4kx4done
q4kx4loop:
	// d and dmin of the weights as floats in X14, X15.
	MOVWLZX (SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14
	MOVWLZX 2(SI), AX
	VMOVD AX, X15
	VCVTPH2PS X15, X15
	// unpack scales (AX) and mins (R12) as in dotQ4KAVX2
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL DX, R12
	SHRL $4, R12
	ANDL $0x0f0f0f0f, R12
	MOVL BX, R13
	SHRL $6, R13
	ANDL $0x03030303, R13
	SHLL $4, R13
	ORL  R13, R12              // utmp3
	MOVL BX, R14
	ANDL $0x3f3f3f3f, R14      // uaux
	ANDL $0x0f0f0f0f, DX
	MOVL AX, R13
	SHRL $6, R13
	ANDL $0x03030303, R13
	SHLL $4, R13
	ORL  R13, DX               // utmp1
	ANDL $0x3f3f3f3f, AX       // utmp0
	SHLQ $32, DX
	ORQ  DX, AX                // scales
	SHLQ $32, R12
	ORQ  R14, R12              // mins
	VMOVQ R12, X4
	VPMOVZXBW X4, X4           // 8 int16 mins
	Q4KX4MINS(R8, Y0)
	Q4KX4MINS(R9, Y1)
	Q4KX4MINS(R10, Y2)
	Q4KX4MINS(R11, Y3)
	VMOVQ AX, X4
	VPMOVZXBW X4, X4
	VINSERTI128 $1, X4, Y4, Y4 // 8 int16 scales in both lanes
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15      // nibble mask (dmin no longer needed)
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	LEAQ k4shuf<>(SB), R13
	// group 0..3
	VMOVDQU 16(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VPSHUFB (R13), Y4, Y6
	VPSHUFB 32(R13), Y4, Y7
	Q4KX4GROUP(R8, 4, Y8)
	Q4KX4GROUP(R9, 4, Y9)
	Q4KX4GROUP(R10, 4, Y10)
	Q4KX4GROUP(R11, 4, Y11)
	VMOVDQU 48(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VPSHUFB 64(R13), Y4, Y6
	VPSHUFB 96(R13), Y4, Y7
	Q4KX4GROUP(R8, 68, Y8)
	Q4KX4GROUP(R9, 68, Y9)
	Q4KX4GROUP(R10, 68, Y10)
	Q4KX4GROUP(R11, 68, Y11)
	VMOVDQU 80(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VPSHUFB 128(R13), Y4, Y6
	VPSHUFB 160(R13), Y4, Y7
	Q4KX4GROUP(R8, 132, Y8)
	Q4KX4GROUP(R9, 132, Y9)
	Q4KX4GROUP(R10, 132, Y10)
	Q4KX4GROUP(R11, 132, Y11)
	VMOVDQU 112(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VPSHUFB 192(R13), Y4, Y6
	VPSHUFB 224(R13), Y4, Y7
	Q4KX4GROUP(R8, 196, Y8)
	Q4KX4GROUP(R9, 196, Y9)
	Q4KX4GROUP(R10, 196, Y10)
	Q4KX4GROUP(R11, 196, Y11)
	Q4KX4FIN(R8, Y8, Y0)
	Q4KX4FIN(R9, Y9, Y1)
	Q4KX4FIN(R10, Y10, Y2)
	Q4KX4FIN(R11, Y11, Y3)
	ADDQ $144, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  q4kx4loop
q4kx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// Per-block body shared by the four-vector Q8_0-activation kernels: the
// signed weights are in Y13 and their f16 scale at (SI). Loads the four
// activation scales, forms d_w*d_x for each in tmp-16(SP), then accumulates
// each vector's block product into Y0-Y3.
#define Q80X4SCALES \
	MOVWLZX (SI), AX \
	VMOVD AX, X4 \
	VCVTPH2PS X4, X4 \
	VBROADCASTSS X4, X4 \
	MOVWLZX (R8), AX \
	VMOVD AX, X5 \
	VPINSRW $1, (R9), X5, X5 \
	VPINSRW $2, (R10), X5, X5 \
	VPINSRW $3, (R11), X5, X5 \
	VCVTPH2PS X5, X5 \
	VMULPS X4, X5, X5 \
	VMOVUPS X5, tmp-16(SP) \
	VPSIGNB Y13, Y13, Y12

#define Q80X4VEC(XR, off, ACC) \
	VMOVDQU 2(XR), Y4 \
	VPSIGNB Y13, Y4, Y4 \
	VPMADDUBSW Y4, Y12, Y4 \
	VPMADDWD Y15, Y4, Y4 \
	VCVTDQ2PS Y4, Y4 \
	VBROADCASTSS tmp-16+off(SP), Y5 \
	VFMADD231PS Y4, Y5, ACC

#define Q80X4ADVANCE(wb) \
	ADDQ $wb, SI \
	ADDQ $34, R8 \
	ADDQ $34, R9 \
	ADDQ $34, R10 \
	ADDQ $34, R11

#define X4PROLOGUE \
	MOVQ nb+0(FP), CX \
	MOVQ w+8(FP), SI \
	MOVQ x+16(FP), R8 \
	MOVQ xstride+24(FP), AX \
	LEAQ (R8)(AX*1), R9 \
	LEAQ (R9)(AX*1), R10 \
	LEAQ (R10)(AX*1), R11 \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VPCMPEQW Y15, Y15, Y15 \
	VPSRLW $15, Y15, Y15

// func dotQ8_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
TEXT ·dotQ8_0x4AVX2(SB), NOSPLIT, $16-40
	X4PROLOGUE
	TESTQ CX, CX
	JEQ  q80x4done
q80x4loop:
	VMOVDQU 2(SI), Y13
	Q80X4SCALES
	Q80X4VEC(R8, 0, Y0)
	Q80X4VEC(R9, 4, Y1)
	Q80X4VEC(R10, 8, Y2)
	Q80X4VEC(R11, 12, Y3)
	Q80X4ADVANCE(34)
	DECQ CX
	JNZ  q80x4loop
q80x4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// func dotQ4_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
TEXT ·dotQ4_0x4AVX2(SB), NOSPLIT, $48-40
	X4PROLOGUE
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x08080808, AX
	VMOVD AX, X11
	VPBROADCASTD X11, Y11
	VMOVDQU Y11, tmp-48(SP)
	TESTQ CX, CX
	JEQ  q40x4done
q40x4loop:
	VMOVDQU 2(SI), X13
	VPSRLW $4, X13, X6
	VINSERTI128 $1, X6, Y13, Y13
	VPAND Y14, Y13, Y13
	VPSUBB tmp-48(SP), Y13, Y13
	Q80X4SCALES
	Q80X4VEC(R8, 0, Y0)
	Q80X4VEC(R9, 4, Y1)
	Q80X4VEC(R10, 8, Y2)
	Q80X4VEC(R11, 12, Y3)
	Q80X4ADVANCE(18)
	DECQ CX
	JNZ  q40x4loop
q40x4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

DATA m4bytes<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA m4bytes<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA m4bytes<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA m4bytes<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL m4bytes<>(SB), RODATA|NOPTR, $32

DATA m2bytes<>+0(SB)/8, $0x0303030303030303
DATA m2bytes<>+8(SB)/8, $0x0303030303030303
DATA m2bytes<>+16(SB)/8, $0x0303030303030303
DATA m2bytes<>+24(SB)/8, $0x0303030303030303
GLOBL m2bytes<>(SB), RODATA|NOPTR, $32

// func dotQ6Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Four Q8_K activation rows against one Q6_K row. The 6-bit values are
// unpacked once per 128-element chunk; the -32 offset is applied per vector
// through the activations' block sums (32 * sum_k scale_k * bsum_k).
// Float accumulators live in the frame (acc0..acc3), integer sums in Y0-Y3.
TEXT ·dotQ6Kx4AVX2(SB), NOSPLIT, $128-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y12, Y12, Y12
	VMOVUPS Y12, acc0-128(SP)
	VMOVUPS Y12, acc1-96(SP)
	VMOVUPS Y12, acc2-64(SP)
	VMOVUPS Y12, acc3-32(SP)
	TESTQ CX, CX
	JEQ  q6kx4done
q6kx4loop:
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	// chunk 0: unpack 128 six-bit values into Y8-Y11
	VMOVDQU 0(SI), Y12
	VMOVDQU 32(SI), Y13
	VMOVDQU 128(SI), Y14
	VPAND m2bytes<>(SB), Y14, Y15
	VPSLLW $4, Y15, Y15
	VPAND m4bytes<>(SB), Y12, Y8
	VPOR Y15, Y8, Y8
	VPSRLW $2, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPAND m4bytes<>(SB), Y13, Y9
	VPOR Y15, Y9, Y9
	VPSRLW $4, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPSRLW $4, Y12, Y12
	VPAND m4bytes<>(SB), Y12, Y10
	VPOR Y15, Y10, Y10
	VPSRLW $6, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPSRLW $4, Y13, Y13
	VPAND m4bytes<>(SB), Y13, Y11
	VPOR Y15, Y11, Y11
	VMOVDQU 192(SI), X12
	VPSHUFB q6shuf<>+0(SB), X12, X4
	VPMOVSXBW X4, Y4
	VPSHUFB q6shuf<>+16(SB), X12, X5
	VPMOVSXBW X5, Y5
	VPSHUFB q6shuf<>+32(SB), X12, X6
	VPMOVSXBW X6, Y6
	VPSHUFB q6shuf<>+48(SB), X12, X7
	VPMOVSXBW X7, Y7
	VPMADDUBSW 4(R8), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 36(R8), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 68(R8), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 100(R8), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 4(R9), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 36(R9), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 68(R9), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 100(R9), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 4(R10), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 36(R10), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 68(R10), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 100(R10), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 4(R11), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 36(R11), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 68(R11), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 100(R11), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y3, Y3
	// chunk 1: unpack 128 six-bit values into Y8-Y11
	VMOVDQU 64(SI), Y12
	VMOVDQU 96(SI), Y13
	VMOVDQU 160(SI), Y14
	VPAND m2bytes<>(SB), Y14, Y15
	VPSLLW $4, Y15, Y15
	VPAND m4bytes<>(SB), Y12, Y8
	VPOR Y15, Y8, Y8
	VPSRLW $2, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPAND m4bytes<>(SB), Y13, Y9
	VPOR Y15, Y9, Y9
	VPSRLW $4, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPSRLW $4, Y12, Y12
	VPAND m4bytes<>(SB), Y12, Y10
	VPOR Y15, Y10, Y10
	VPSRLW $6, Y14, Y15
	VPAND m2bytes<>(SB), Y15, Y15
	VPSLLW $4, Y15, Y15
	VPSRLW $4, Y13, Y13
	VPAND m4bytes<>(SB), Y13, Y11
	VPOR Y15, Y11, Y11
	VMOVDQU 192(SI), X12
	VPSHUFB q6shuf<>+64(SB), X12, X4
	VPMOVSXBW X4, Y4
	VPSHUFB q6shuf<>+80(SB), X12, X5
	VPMOVSXBW X5, Y5
	VPSHUFB q6shuf<>+96(SB), X12, X6
	VPMOVSXBW X6, Y6
	VPSHUFB q6shuf<>+112(SB), X12, X7
	VPMOVSXBW X7, Y7
	VPMADDUBSW 132(R8), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 164(R8), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 196(R8), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 228(R8), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y0, Y0
	VPMADDUBSW 132(R9), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 164(R9), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 196(R9), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 228(R9), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y1, Y1
	VPMADDUBSW 132(R10), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 164(R10), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 196(R10), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 228(R10), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y2, Y2
	VPMADDUBSW 132(R11), Y8, Y13
	VPMADDWD Y4, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 164(R11), Y9, Y13
	VPMADDWD Y5, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 196(R11), Y10, Y13
	VPMADDWD Y6, Y13, Y13
	VPADDD Y13, Y3, Y3
	VPMADDUBSW 228(R11), Y11, Y13
	VPMADDWD Y7, Y13, Y13
	VPADDD Y13, Y3, Y3
	// offset: sumi -= 32 * madd(scales16, bsums)
	VPMOVSXBW 192(SI), Y13
	VPMADDWD 260(R8), Y13, Y12
	VPSLLD $5, Y12, Y12
	VPSUBD Y12, Y0, Y0
	VPMADDWD 260(R9), Y13, Y12
	VPSLLD $5, Y12, Y12
	VPSUBD Y12, Y1, Y1
	VPMADDWD 260(R10), Y13, Y12
	VPSLLD $5, Y12, Y12
	VPSUBD Y12, Y2, Y2
	VPMADDWD 260(R11), Y13, Y12
	VPSLLD $5, Y12, Y12
	VPSUBD Y12, Y3, Y3
	MOVWLZX 208(SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14
	VCVTDQ2PS Y0, Y0
	VMULSS (R8), X14, X15
	VBROADCASTSS X15, Y15
	VMOVUPS acc0-128(SP), Y12
	VFMADD231PS Y0, Y15, Y12
	VMOVUPS Y12, acc0-128(SP)
	VCVTDQ2PS Y1, Y1
	VMULSS (R9), X14, X15
	VBROADCASTSS X15, Y15
	VMOVUPS acc1-96(SP), Y12
	VFMADD231PS Y1, Y15, Y12
	VMOVUPS Y12, acc1-96(SP)
	VCVTDQ2PS Y2, Y2
	VMULSS (R10), X14, X15
	VBROADCASTSS X15, Y15
	VMOVUPS acc2-64(SP), Y12
	VFMADD231PS Y2, Y15, Y12
	VMOVUPS Y12, acc2-64(SP)
	VCVTDQ2PS Y3, Y3
	VMULSS (R11), X14, X15
	VBROADCASTSS X15, Y15
	VMOVUPS acc3-32(SP), Y12
	VFMADD231PS Y3, Y15, Y12
	VMOVUPS Y12, acc3-32(SP)
	ADDQ $210, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  q6kx4loop
q6kx4done:
	MOVQ out+32(FP), DX
	VMOVUPS acc0-128(SP), Y0
	VMOVUPS acc1-96(SP), Y1
	VMOVUPS acc2-64(SP), Y2
	VMOVUPS acc3-32(SP), Y3
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET


DATA m1bytes<>+0(SB)/8, $0x0101010101010101
DATA m1bytes<>+8(SB)/8, $0x0101010101010101
DATA m1bytes<>+16(SB)/8, $0x0101010101010101
DATA m1bytes<>+24(SB)/8, $0x0101010101010101
GLOBL m1bytes<>(SB), RODATA|NOPTR, $32

// func dotQ5Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Like dotQ4Kx4AVX2 for a Q5_K row: qh (at 16) adds the fifth bits.
TEXT ·dotQ5Kx4AVX2(SB), NOSPLIT, $0-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	TESTQ CX, CX
	JEQ  q5kx4done
q5kx4loop:
	// d and dmin of the weights as floats in X14, X15.
	MOVWLZX (SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14
	MOVWLZX 2(SI), AX
	VMOVD AX, X15
	VCVTPH2PS X15, X15
	// unpack scales (AX) and mins (R12) as in dotQ4KAVX2
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL DX, R12
	SHRL $4, R12
	ANDL $0x0f0f0f0f, R12
	MOVL BX, R13
	SHRL $6, R13
	ANDL $0x03030303, R13
	SHLL $4, R13
	ORL  R13, R12              // utmp3
	MOVL BX, R14
	ANDL $0x3f3f3f3f, R14      // uaux
	ANDL $0x0f0f0f0f, DX
	MOVL AX, R13
	SHRL $6, R13
	ANDL $0x03030303, R13
	SHLL $4, R13
	ORL  R13, DX               // utmp1
	ANDL $0x3f3f3f3f, AX       // utmp0
	SHLQ $32, DX
	ORQ  DX, AX                // scales
	SHLQ $32, R12
	ORQ  R14, R12              // mins
	VMOVQ R12, X4
	VPMOVZXBW X4, X4           // 8 int16 mins
	Q4KX4MINS(R8, Y0)
	Q4KX4MINS(R9, Y1)
	Q4KX4MINS(R10, Y2)
	Q4KX4MINS(R11, Y3)
	VMOVQ AX, X4
	VPMOVZXBW X4, X4
	VINSERTI128 $1, X4, Y4, Y4 // 8 int16 scales in both lanes
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15      // nibble mask (dmin no longer needed)
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	LEAQ k4shuf<>(SB), R13
	// group 0..3
	VMOVDQU 48(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VMOVDQU 16(SI), Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y12, Y12
	VMOVDQU 16(SI), Y5
	VPSRLW $1, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y13, Y13
	VPSHUFB (R13), Y4, Y6
	VPSHUFB 32(R13), Y4, Y7
	Q4KX4GROUP(R8, 4, Y8)
	Q4KX4GROUP(R9, 4, Y9)
	Q4KX4GROUP(R10, 4, Y10)
	Q4KX4GROUP(R11, 4, Y11)
	VMOVDQU 80(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VMOVDQU 16(SI), Y5
	VPSRLW $2, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y12, Y12
	VMOVDQU 16(SI), Y5
	VPSRLW $3, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y13, Y13
	VPSHUFB 64(R13), Y4, Y6
	VPSHUFB 96(R13), Y4, Y7
	Q4KX4GROUP(R8, 68, Y8)
	Q4KX4GROUP(R9, 68, Y9)
	Q4KX4GROUP(R10, 68, Y10)
	Q4KX4GROUP(R11, 68, Y11)
	VMOVDQU 112(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VMOVDQU 16(SI), Y5
	VPSRLW $4, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y12, Y12
	VMOVDQU 16(SI), Y5
	VPSRLW $5, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y13, Y13
	VPSHUFB 128(R13), Y4, Y6
	VPSHUFB 160(R13), Y4, Y7
	Q4KX4GROUP(R8, 132, Y8)
	Q4KX4GROUP(R9, 132, Y9)
	Q4KX4GROUP(R10, 132, Y10)
	Q4KX4GROUP(R11, 132, Y11)
	VMOVDQU 144(SI), Y12
	VPSRLW $4, Y12, Y13
	VPAND Y15, Y12, Y12
	VPAND Y15, Y13, Y13
	VMOVDQU 16(SI), Y5
	VPSRLW $6, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y12, Y12
	VMOVDQU 16(SI), Y5
	VPSRLW $7, Y5, Y5
	VPAND m1bytes<>(SB), Y5, Y5
	VPSLLW $4, Y5, Y5
	VPOR Y5, Y13, Y13
	VPSHUFB 192(R13), Y4, Y6
	VPSHUFB 224(R13), Y4, Y7
	Q4KX4GROUP(R8, 196, Y8)
	Q4KX4GROUP(R9, 196, Y9)
	Q4KX4GROUP(R10, 196, Y10)
	Q4KX4GROUP(R11, 196, Y11)
	Q4KX4FIN(R8, Y8, Y0)
	Q4KX4FIN(R9, Y9, Y1)
	Q4KX4FIN(R10, Y10, Y2)
	Q4KX4FIN(R11, Y11, Y3)
	ADDQ $176, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  q5kx4loop
q5kx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// func dotIQ4NLx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
TEXT ·dotIQ4NLx4AVX2(SB), NOSPLIT, $16-40
	X4PROLOGUE
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	VMOVDQU iq4nlvals<>(SB), Y11
	TESTQ CX, CX
	JEQ  iq4nlx4done
iq4nlx4loop:
	VMOVDQU 2(SI), X13
	VPSRLW $4, X13, X6
	VINSERTI128 $1, X6, Y13, Y13
	VPAND Y14, Y13, Y13
	VPSHUFB Y13, Y11, Y13
	Q80X4SCALES
	Q80X4VEC(R8, 0, Y0)
	Q80X4VEC(R9, 4, Y1)
	Q80X4VEC(R10, 8, Y2)
	Q80X4VEC(R11, 12, Y3)
	Q80X4ADVANCE(18)
	DECQ CX
	JNZ  iq4nlx4loop
iq4nlx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// func dotQ5_0x4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
TEXT ·dotQ5_0x4AVX2(SB), NOSPLIT, $16-40
	X4PROLOGUE
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	TESTQ CX, CX
	JEQ  q50x4done
q50x4loop:
	VMOVDQU 6(SI), X13
	VPSRLW $4, X13, X6
	VINSERTI128 $1, X6, Y13, Y13
	VPAND Y14, Y13, Y13
	// high bits: bytes_from_bits_32(qh) -> 0xF0 where the bit is 0
	MOVL 2(SI), AX
	VMOVD AX, X6
	VPBROADCASTD X6, Y6
	VPSHUFB bitsshuf<>(SB), Y6, Y6
	VPOR bitsmask<>(SB), Y6, Y6
	VPCMPEQB Y7, Y7, Y7
	VPCMPEQB Y7, Y6, Y6
	MOVL $0xF0F0F0F0, AX
	VMOVD AX, X7
	VPBROADCASTD X7, Y7
	VPANDN Y7, Y6, Y6
	VPOR Y6, Y13, Y13
	Q80X4SCALES
	Q80X4VEC(R8, 0, Y0)
	Q80X4VEC(R9, 4, Y1)
	Q80X4VEC(R10, 8, Y2)
	Q80X4VEC(R11, 12, Y3)
	Q80X4ADVANCE(22)
	DECQ CX
	JNZ  q50x4loop
q50x4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET


// func cvtF16ToF32AVX2(dst *float32, src *uint16, n int)
// n must be a multiple of 8.
TEXT ·cvtF16ToF32AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ BX, BX
cvt16loop:
	CMPQ BX, CX
	JGE  cvt16done
	VCVTPH2PS (SI)(BX*2), Y0
	VMOVUPS Y0, (DI)(BX*4)
	ADDQ $8, BX
	JMP  cvt16loop
cvt16done:
	VZEROUPPER
	RET

// func cvtF32ToF16AVX2(dst *uint16, src *float32, n int)
// n must be a multiple of 8. Rounds to nearest even (imm 0).
TEXT ·cvtF32ToF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ BX, BX
cvt32loop:
	CMPQ BX, CX
	JGE  cvt32done
	VMOVUPS (SI)(BX*4), Y0
	VCVTPS2PH $0, Y0, X1
	VMOVDQU X1, (DI)(BX*2)
	ADDQ $8, BX
	JMP  cvt32loop
cvt32done:
	VZEROUPPER
	RET

// func dotQ2Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Four Q8_K activation rows against one Q2_K row; 2-bit values and scales
// are unpacked once per group of 32 and used for all four.
TEXT ·dotQ2Kx4AVX2(SB), NOSPLIT, $0-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ q3shuf<>(SB), R13
	TESTQ CX, CX
	JEQ  q2kx4done
q2kx4loop:
	// mins (high nibbles of scales) times each vector's bsums, times dmin*y.d
	VMOVDQU (SI), X12
	VPSRLW $4, X12, X7
	VPAND m4bytes<>(SB), X7, X7
	VPMOVZXBW X7, Y7
	MOVWLZX 82(SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14         // dmin
	VPMADDWD 260(R8), Y7, Y4
	VCVTDQ2PS Y4, Y4
	VMULSS (R8), X14, X5
	VBROADCASTSS X5, Y5
	VFNMADD231PS Y4, Y5, Y0
	VPMADDWD 260(R9), Y7, Y4
	VCVTDQ2PS Y4, Y4
	VMULSS (R9), X14, X5
	VBROADCASTSS X5, Y5
	VFNMADD231PS Y4, Y5, Y1
	VPMADDWD 260(R10), Y7, Y4
	VCVTDQ2PS Y4, Y4
	VMULSS (R10), X14, X5
	VBROADCASTSS X5, Y5
	VFNMADD231PS Y4, Y5, Y2
	VPMADDWD 260(R11), Y7, Y4
	VCVTDQ2PS Y4, Y4
	VMULSS (R11), X14, X5
	VBROADCASTSS X5, Y5
	VFNMADD231PS Y4, Y5, Y3
	// scales (low nibbles) as int16, both 128-bit halves replicated
	VPAND m4bytes<>(SB), X12, X12
	VPMOVZXBW X12, Y12
	VEXTRACTI128 $1, Y12, X13
	VINSERTI128 $1, X13, Y13, Y13
	VINSERTI128 $1, X12, Y12, Y12
	MOVWLZX 80(SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14         // d
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	VMOVDQU 16(SI), Y15
	VPSRLW $0, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 0(R13), Y12, Y7
	VPMADDUBSW 4(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 4(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 4(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 4(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $2, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 32(R13), Y12, Y7
	VPMADDUBSW 36(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 36(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 36(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 36(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $4, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 64(R13), Y12, Y7
	VPMADDUBSW 68(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 68(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 68(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 68(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $6, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 96(R13), Y12, Y7
	VPMADDUBSW 100(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 100(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 100(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 100(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 48(SI), Y15
	VPSRLW $0, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 0(R13), Y13, Y7
	VPMADDUBSW 132(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 132(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 132(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 132(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $2, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 32(R13), Y13, Y7
	VPMADDUBSW 164(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 164(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 164(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 164(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $4, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 64(R13), Y13, Y7
	VPMADDUBSW 196(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 196(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 196(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 196(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VPSRLW $6, Y15, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSHUFB 96(R13), Y13, Y7
	VPMADDUBSW 228(R8), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y8, Y8
	VPMADDUBSW 228(R9), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y9, Y9
	VPMADDUBSW 228(R10), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y10, Y10
	VPMADDUBSW 228(R11), Y6, Y4
	VPMADDWD Y7, Y4, Y4
	VPADDD Y4, Y11, Y11
	VCVTDQ2PS Y8, Y8
	VMULSS (R8), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y8, Y5, Y0
	VCVTDQ2PS Y9, Y9
	VMULSS (R9), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y9, Y5, Y1
	VCVTDQ2PS Y10, Y10
	VMULSS (R10), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y10, Y5, Y2
	VCVTDQ2PS Y11, Y11
	VMULSS (R11), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y11, Y5, Y3
	ADDQ $84, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  q2kx4loop
q2kx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// func dotQ3Kx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Four Q8_K activation rows against one Q3_K row; the signed 3-bit values
// (low bits minus 4 where the hmask bit is clear) are formed once per group.
TEXT ·dotQ3Kx4AVX2(SB), NOSPLIT, $0-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	LEAQ q3shuf<>(SB), R13
	TESTQ CX, CX
	JEQ  q3kx4done
q3kx4loop:
	// scales, as in dotQ3KAVX2
	MOVL 96(SI), AX
	MOVL 100(SI), BX
	MOVL 104(SI), DX
	MOVL AX, R14
	ANDL $0x0f0f0f0f, R14
	MOVL DX, R12
	ANDL $0x03030303, R12
	SHLL $4, R12
	ORL  R12, R14
	MOVL BX, DI
	ANDL $0x0f0f0f0f, DI
	MOVL DX, R12
	SHRL $2, R12
	ANDL $0x03030303, R12
	SHLL $4, R12
	ORL  R12, DI
	SHLQ $32, DI
	ORQ  DI, R14
	SHRL $4, AX
	ANDL $0x0f0f0f0f, AX
	MOVL DX, R12
	SHRL $4, R12
	ANDL $0x03030303, R12
	SHLL $4, R12
	ORL  R12, AX
	SHRL $4, BX
	ANDL $0x0f0f0f0f, BX
	SHRL $6, DX
	ANDL $0x03030303, DX
	SHLL $4, DX
	ORL  DX, BX
	SHLQ $32, BX
	ORQ  BX, AX
	VMOVQ R14, X12
	VPINSRQ $1, AX, X12, X12
	MOVL $0x20202020, AX
	VMOVD AX, X4
	VPBROADCASTD X4, X4
	VPSUBB X4, X12, X12
	VPMOVSXBW X12, Y12
	VEXTRACTI128 $1, Y12, X13
	VINSERTI128 $1, X13, Y13, Y13
	VINSERTI128 $1, X12, Y12, Y12
	VMOVDQU (SI), Y15
	VPCMPEQB Y4, Y4, Y4
	VPXOR Y4, Y15, Y15         // ~hmask
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	VMOVDQU 32(SI), Y4
	VPSRLW $0, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $0, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 0(R13), Y12, Y14
	VMOVDQU 4(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 4(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 4(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 4(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 32(SI), Y4
	VPSRLW $2, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $1, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 32(R13), Y12, Y14
	VMOVDQU 36(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 36(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 36(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 36(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 32(SI), Y4
	VPSRLW $4, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $2, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 64(R13), Y12, Y14
	VMOVDQU 68(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 68(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 68(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 68(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 32(SI), Y4
	VPSRLW $6, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $3, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 96(R13), Y12, Y14
	VMOVDQU 100(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 100(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 100(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 100(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 64(SI), Y4
	VPSRLW $0, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $4, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 0(R13), Y13, Y14
	VMOVDQU 132(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 132(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 132(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 132(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 64(SI), Y4
	VPSRLW $2, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $5, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 32(R13), Y13, Y14
	VMOVDQU 164(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 164(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 164(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 164(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 64(SI), Y4
	VPSRLW $4, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $6, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 64(R13), Y13, Y14
	VMOVDQU 196(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 196(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 196(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 196(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	VMOVDQU 64(SI), Y4
	VPSRLW $6, Y4, Y6
	VPAND m2bytes<>(SB), Y6, Y6
	VPSRLW $7, Y15, Y7
	VPAND m1bytes<>(SB), Y7, Y7
	VPSLLW $2, Y7, Y7
	VPSUBB Y7, Y6, Y6          // signed value in [-4, 3]
	VPSIGNB Y6, Y6, Y7         // |value|
	VPSHUFB 96(R13), Y13, Y14
	VMOVDQU 228(R8), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y8, Y8
	VMOVDQU 228(R9), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y9, Y9
	VMOVDQU 228(R10), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y10, Y10
	VMOVDQU 228(R11), Y4
	VPSIGNB Y6, Y4, Y4
	VPMADDUBSW Y4, Y7, Y4
	VPMADDWD Y14, Y4, Y4
	VPADDD Y4, Y11, Y11
	MOVWLZX 108(SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14         // d
	VCVTDQ2PS Y8, Y8
	VMULSS (R8), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y8, Y5, Y0
	VCVTDQ2PS Y9, Y9
	VMULSS (R9), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y9, Y5, Y1
	VCVTDQ2PS Y10, Y10
	VMULSS (R10), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y10, Y5, Y2
	VCVTDQ2PS Y11, Y11
	VMULSS (R11), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y11, Y5, Y3
	ADDQ $110, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  q3kx4loop
q3kx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

// func dotIQ4XSx4AVX2(nb int, w, x *byte, xstride int, out *[4]float32)
// Four Q8_K activation rows against one IQ4_XS row; codebook lookups and
// sub-block scales are done once per 32 elements for all four.
TEXT ·dotIQ4XSx4AVX2(SB), NOSPLIT, $0-40
	MOVQ nb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ x+16(FP), R8
	MOVQ xstride+24(FP), AX
	LEAQ (R8)(AX*1), R9
	LEAQ (R9)(AX*1), R10
	LEAQ (R10)(AX*1), R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VMOVDQU iq4nlvals<>(SB), Y12
	MOVL $0x0F0F0F0F, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	TESTQ CX, CX
	JEQ  iq4xsx4done
iq4xsx4loop:
	MOVWLZX 2(SI), R12         // scales_h
	MOVL 4(SI), R13            // scales_l
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 8(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 4(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 4(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 4(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 4(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 24(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 36(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 36(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 36(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 36(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 40(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 68(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 68(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 68(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 68(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 56(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 100(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 100(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 100(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 100(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 72(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 132(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 132(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 132(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 132(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 88(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 164(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 164(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 164(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 164(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 104(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 196(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 196(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 196(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 196(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVL R13, AX
	ANDL $0xf, AX
	MOVL R12, BX
	ANDL $3, BX
	SHLL $4, BX
	ORL  BX, AX
	SUBL $32, AX
	SHRL $4, R13
	SHRL $2, R12
	VMOVD AX, X5
	VPBROADCASTW X5, Y5
	VMOVDQU 120(SI), X6
	VPSRLW $4, X6, X7
	VINSERTI128 $1, X7, Y6, Y6
	VPAND Y13, Y6, Y6
	VPSHUFB Y6, Y12, Y6
	VPSIGNB Y6, Y6, Y4
	VMOVDQU 228(R8), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y8, Y8
	VMOVDQU 228(R9), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y9, Y9
	VMOVDQU 228(R10), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y10, Y10
	VMOVDQU 228(R11), Y7
	VPSIGNB Y6, Y7, Y7
	VPMADDUBSW Y7, Y4, Y7
	VPMADDWD Y5, Y7, Y7
	VPADDD Y7, Y11, Y11
	MOVWLZX (SI), AX
	VMOVD AX, X14
	VCVTPH2PS X14, X14
	VCVTDQ2PS Y8, Y8
	VMULSS (R8), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y8, Y5, Y0
	VCVTDQ2PS Y9, Y9
	VMULSS (R9), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y9, Y5, Y1
	VCVTDQ2PS Y10, Y10
	VMULSS (R10), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y10, Y5, Y2
	VCVTDQ2PS Y11, Y11
	VMULSS (R11), X14, X5
	VBROADCASTSS X5, Y5
	VFMADD231PS Y11, Y5, Y3
	ADDQ $136, SI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	ADDQ $292, R11
	DECQ CX
	JNZ  iq4xsx4loop
iq4xsx4done:
	MOVQ out+32(FP), DX
	HSUMSTORE(Y0, X0, 0)
	HSUMSTORE(Y1, X1, 4)
	HSUMSTORE(Y2, X2, 8)
	HSUMSTORE(Y3, X3, 12)
	VZEROUPPER
	RET

