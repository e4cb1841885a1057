//go:build amd64 && !purego

#include "textflag.h"

// Constants of math.Exp (math/exp_amd64.s), as four float64 lanes.
#define BCAST(name, val) \
	DATA name<>+0(SB)/8, val \
	DATA name<>+8(SB)/8, val \
	DATA name<>+16(SB)/8, val \
	DATA name<>+24(SB)/8, val \
	GLOBL name<>(SB), RODATA, $32

BCAST(expLog2e, $1.4426950408889634073599246810018920)
BCAST(expLn2u, $0.69314718055966295651160180568695068359375)
BCAST(expLn2l, $0.28235290563031577122588448175013436025525412068e-12)
BCAST(expSixteenth, $0.0625)
BCAST(expC64, $2.4801587301587301587e-5)
BCAST(expC56, $1.9841269841269841270e-4)
BCAST(expC48, $1.3888888888888888889e-3)
BCAST(expC40, $8.3333333333333333333e-3)
BCAST(expC32, $4.1666666666666666667e-2)
BCAST(expC24, $1.6666666666666666667e-1)
BCAST(expHalf, $0.5)
BCAST(expOne, $1.0)
BCAST(expTwo, $2.0)
BCAST(expRangeV, $700.0)
BCAST(expAbsMask, $0x7fffffffffffffff)
BCAST(expBias, $1023)

// func expF32x4AVX2(dst, src *float32, n int) int
TEXT ·expF32x4AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ AX, AX
exploop:
	CMPQ AX, CX
	JGE  expdone
	VCVTPS2PD (SI)(AX*4), Y0
	// |x| <= 700 in every lane (NaN compares false), else stop here.
	VANDPD    expAbsMask<>(SB), Y0, Y1
	VCMPPD    $2, expRangeV<>(SB), Y1, Y1
	VMOVMSKPD Y1, DX
	CMPQ      DX, $15
	JNE       expdone
	// k = round(x·log2 e); x -= k·ln2 (two fused parts); x /= 16.
	VMULPD    expLog2e<>(SB), Y0, Y1
	VCVTPD2DQY Y1, X2
	VCVTDQ2PD X2, Y1
	VFNMADD231PD expLn2u<>(SB), Y1, Y0
	VFNMADD231PD expLn2l<>(SB), Y1, Y0
	VMULPD    expSixteenth<>(SB), Y0, Y0
	// Taylor series.
	VMOVUPD   expC64<>(SB), Y1
	VFMADD213PD expC56<>(SB), Y0, Y1
	VFMADD213PD expC48<>(SB), Y0, Y1
	VFMADD213PD expC40<>(SB), Y0, Y1
	VFMADD213PD expC32<>(SB), Y0, Y1
	VFMADD213PD expC24<>(SB), Y0, Y1
	VFMADD213PD expHalf<>(SB), Y0, Y1
	VFMADD213PD expOne<>(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	// Four squarings of (1+y): y = y·(y+2), the last fused with +1.
	VADDPD    expTwo<>(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    expTwo<>(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    expTwo<>(SB), Y0, Y1
	VMULPD    Y1, Y0, Y0
	VADDPD    expTwo<>(SB), Y0, Y1
	VFMADD213PD expOne<>(SB), Y1, Y0
	// · 2^k, then to float32.
	VPMOVSXDQ X2, Y3
	VPADDQ    expBias<>(SB), Y3, Y3
	VPSLLQ    $52, Y3, Y3
	VMULPD    Y3, Y0, Y0
	VCVTPD2PSY Y0, X0
	VMOVUPS   X0, (DI)(AX*4)
	ADDQ      $4, AX
	JMP       exploop
expdone:
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET
