//go:build arm64 && !purego

#include "textflag.h"

// NEON kernels for arm64. The Go assembler has no mnemonics for SDOT,
// FCVTL, SCVTF (vector) and friends, so the bodies are emitted as WORDs,
// assembled with GNU as from dot_arm64_neon.S.txt in this directory (the
// instruction is in each comment). Only R0-R7 and V0-V7, V16-V31 are used;
// branches are PC-relative within each body. The q8_0, q4_0, q4_K and q6_K
// kernels use SDOT (ARMv8.2 dotprod) and are selected only when
// cpu.ARM64.HasASIMDDP.

// func dotF32NEON(n int, a, b *float32) float32
TEXT ·dotF32NEON(SB), NOSPLIT, $0-28
	MOVD n+0(FP), R0
	MOVD a+8(FP), R1
	MOVD b+16(FP), R2
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0x4f000401 // movi v1.4s, #0x0
	WORD $0x4f000402 // movi v2.4s, #0x0
	WORD $0x4f000403 // movi v3.4s, #0x0
	WORD $0xb4000120 // cbz x0, 34 <f32_body+0x34>
	WORD $0x4cdf2824 // ld1 {v4.4s-v7.4s}, [x1], #64
	WORD $0x4cdf2850 // ld1 {v16.4s-v19.4s}, [x2], #64
	WORD $0x4e30cc80 // fmla v0.4s, v4.4s, v16.4s
	WORD $0x4e31cca1 // fmla v1.4s, v5.4s, v17.4s
	WORD $0x4e32ccc2 // fmla v2.4s, v6.4s, v18.4s
	WORD $0x4e33cce3 // fmla v3.4s, v7.4s, v19.4s
	WORD $0xf1004000 // subs x0, x0, #0x10
	WORD $0x54ffff21 // b.ne 14 <f32_body+0x14>
	WORD $0x4e21d400 // fadd v0.4s, v0.4s, v1.4s
	WORD $0x4e23d442 // fadd v2.4s, v2.4s, v3.4s
	WORD $0x4e22d400 // fadd v0.4s, v0.4s, v2.4s
	WORD $0x6e20d400 // faddp v0.4s, v0.4s, v0.4s
	WORD $0x7e30d800 // faddp s0, v0.2s
	FMOVS F0, ret+24(FP)
	RET

// func dotF16NEON(n int, a, b *byte) float32
TEXT ·dotF16NEON(SB), NOSPLIT, $0-28
	MOVD n+0(FP), R0
	MOVD a+8(FP), R1
	MOVD b+16(FP), R2
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0x4f000401 // movi v1.4s, #0x0
	WORD $0xb4000160 // cbz x0, 7c <f16_body+0x34>
	WORD $0x4cdf7424 // ld1 {v4.8h}, [x1], #16
	WORD $0x4cdf7445 // ld1 {v5.8h}, [x2], #16
	WORD $0x0e217886 // fcvtl v6.4s, v4.4h
	WORD $0x4e217887 // fcvtl2 v7.4s, v4.8h
	WORD $0x0e2178b0 // fcvtl v16.4s, v5.4h
	WORD $0x4e2178b1 // fcvtl2 v17.4s, v5.8h
	WORD $0x4e30ccc0 // fmla v0.4s, v6.4s, v16.4s
	WORD $0x4e31cce1 // fmla v1.4s, v7.4s, v17.4s
	WORD $0xf1002000 // subs x0, x0, #0x8
	WORD $0x54fffee1 // b.ne 54 <f16_body+0xc>
	WORD $0x4e21d400 // fadd v0.4s, v0.4s, v1.4s
	WORD $0x6e20d400 // faddp v0.4s, v0.4s, v0.4s
	WORD $0x7e30d800 // faddp s0, v0.2s
	FMOVS F0, ret+24(FP)
	RET

// func dotQ8_0NEON(nb int, w, x *byte) float32
TEXT ·dotQ8_0NEON(SB), NOSPLIT, $0-28
	MOVD nb+0(FP), R0
	MOVD w+8(FP), R1
	MOVD x+16(FP), R2
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0xb4000260 // cbz x0, d8 <f16_end+0x50>
	WORD $0x7d400021 // ldr h1, [x1]
	WORD $0x7d400042 // ldr h2, [x2]
	WORD $0x1ee24021 // fcvt s1, h1
	WORD $0x1ee24042 // fcvt s2, h2
	WORD $0x1e220821 // fmul s1, s1, s2
	WORD $0x3cc02023 // ldur q3, [x1, #2]
	WORD $0x3cc12024 // ldur q4, [x1, #18]
	WORD $0x3cc02045 // ldur q5, [x2, #2]
	WORD $0x3cc12046 // ldur q6, [x2, #18]
	WORD $0x4f000407 // movi v7.4s, #0x0
	WORD $0x4e859467 // sdot v7.4s, v3.16b, v5.16b
	WORD $0x4e869487 // sdot v7.4s, v4.16b, v6.16b
	WORD $0x4e21d8e7 // scvtf v7.4s, v7.4s
	WORD $0x4f8110e0 // fmla v0.4s, v7.4s, v1.s[0]
	WORD $0x91008821 // add x1, x1, #0x22
	WORD $0x91008842 // add x2, x2, #0x22
	WORD $0xf1000400 // subs x0, x0, #0x1
	WORD $0x54fffde1 // b.ne 90 <f16_end+0x8>
	WORD $0x6e20d400 // faddp v0.4s, v0.4s, v0.4s
	WORD $0x7e30d800 // faddp s0, v0.2s
	FMOVS F0, ret+24(FP)
	RET

// func dotQ4_0NEON(nb int, w, x *byte) float32
TEXT ·dotQ4_0NEON(SB), NOSPLIT, $0-28
	MOVD nb+0(FP), R0
	MOVD w+8(FP), R1
	MOVD x+16(FP), R2
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0x4f00e5f0 // movi v16.16b, #0xf
	WORD $0x4f00e511 // movi v17.16b, #0x8
	WORD $0xb40002c0 // cbz x0, 144 <q4_0_body+0x64>
	WORD $0x7d400021 // ldr h1, [x1]
	WORD $0x7d400042 // ldr h2, [x2]
	WORD $0x1ee24021 // fcvt s1, h1
	WORD $0x1ee24042 // fcvt s2, h2
	WORD $0x1e220821 // fmul s1, s1, s2
	WORD $0x3cc02023 // ldur q3, [x1, #2]
	WORD $0x4e301c64 // and v4.16b, v3.16b, v16.16b
	WORD $0x6f0c0463 // ushr v3.16b, v3.16b, #4
	WORD $0x6e318484 // sub v4.16b, v4.16b, v17.16b
	WORD $0x6e318463 // sub v3.16b, v3.16b, v17.16b
	WORD $0x3cc02045 // ldur q5, [x2, #2]
	WORD $0x3cc12046 // ldur q6, [x2, #18]
	WORD $0x4f000407 // movi v7.4s, #0x0
	WORD $0x4e859487 // sdot v7.4s, v4.16b, v5.16b
	WORD $0x4e869467 // sdot v7.4s, v3.16b, v6.16b
	WORD $0x4e21d8e7 // scvtf v7.4s, v7.4s
	WORD $0x4f8110e0 // fmla v0.4s, v7.4s, v1.s[0]
	WORD $0x91004821 // add x1, x1, #0x12
	WORD $0x91008842 // add x2, x2, #0x22
	WORD $0xf1000400 // subs x0, x0, #0x1
	WORD $0x54fffd81 // b.ne f0 <q4_0_body+0x10>
	WORD $0x6e20d400 // faddp v0.4s, v0.4s, v0.4s
	WORD $0x7e30d800 // faddp s0, v0.2s
	FMOVS F0, ret+24(FP)
	RET

// func subdotsQ4KNEON(nb int, w, x *byte, out *int32)
TEXT ·subdotsQ4KNEON(SB), NOSPLIT, $0-32
	MOVD nb+0(FP), R0
	MOVD w+8(FP), R1
	MOVD x+16(FP), R2
	MOVD out+24(FP), R3
	WORD $0x4f00e5f0 // movi v16.16b, #0xf
	WORD $0xb4000340 // cbz x0, 1b8 <q4k_end>
	WORD $0x91004024 // add x4, x1, #0x10
	WORD $0x91001045 // add x5, x2, #0x4
	WORD $0xd2800086 // mov x6, #0x4
	WORD $0x4cdfa081 // ld1 {v1.16b, v2.16b}, [x4], #32
	WORD $0x4cdf20a3 // ld1 {v3.16b-v6.16b}, [x5], #64
	WORD $0x4e301c27 // and v7.16b, v1.16b, v16.16b
	WORD $0x4e301c52 // and v18.16b, v2.16b, v16.16b
	WORD $0x6f0c0421 // ushr v1.16b, v1.16b, #4
	WORD $0x6f0c0442 // ushr v2.16b, v2.16b, #4
	WORD $0x4f000414 // movi v20.4s, #0x0
	WORD $0x4f000415 // movi v21.4s, #0x0
	WORD $0x4e8394f4 // sdot v20.4s, v7.16b, v3.16b
	WORD $0x4e849654 // sdot v20.4s, v18.16b, v4.16b
	WORD $0x4e859435 // sdot v21.4s, v1.16b, v5.16b
	WORD $0x4e869455 // sdot v21.4s, v2.16b, v6.16b
	WORD $0x4eb1ba94 // addv s20, v20.4s
	WORD $0x4eb1bab5 // addv s21, v21.4s
	WORD $0x0d9f8074 // st1 {v20.s}[0], [x3], #4
	WORD $0x0d9f8075 // st1 {v21.s}[0], [x3], #4
	WORD $0xf10004c6 // subs x6, x6, #0x1
	WORD $0x54fffde1 // b.ne 160 <q4_0_end+0x14>
	WORD $0x91024021 // add x1, x1, #0x90
	WORD $0x91049042 // add x2, x2, #0x124
	WORD $0xf1000400 // subs x0, x0, #0x1
	WORD $0x54fffd01 // b.ne 154 <q4_0_end+0x8>
	RET

// func subdotsQ6KNEON(nb int, w, x *byte, out *int32)
TEXT ·subdotsQ6KNEON(SB), NOSPLIT, $0-32
	MOVD nb+0(FP), R0
	MOVD w+8(FP), R1
	MOVD x+16(FP), R2
	MOVD out+24(FP), R3
	WORD $0x4f00e5f0 // movi v16.16b, #0xf
	WORD $0x4f01e611 // movi v17.16b, #0x30
	WORD $0x4f01e412 // movi v18.16b, #0x20
	WORD $0xb4000aa0 // cbz x0, 318 <q6k_end>
	WORD $0xaa0103e4 // mov x4, x1
	WORD $0x91020025 // add x5, x1, #0x80
	WORD $0x91001047 // add x7, x2, #0x4
	WORD $0xd2800046 // mov x6, #0x2
	WORD $0x4cdf2081 // ld1 {v1.16b-v4.16b}, [x4], #64
	WORD $0x4cdfa0a5 // ld1 {v5.16b, v6.16b}, [x5], #32
	WORD $0x4e301c33 // and v19.16b, v1.16b, v16.16b
	WORD $0x4f0c54b7 // shl v23.16b, v5.16b, #4
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71e73 // orr v19.16b, v19.16b, v23.16b
	WORD $0x4e301c54 // and v20.16b, v2.16b, v16.16b
	WORD $0x4f0c54d7 // shl v23.16b, v6.16b, #4
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71e94 // orr v20.16b, v20.16b, v23.16b
	WORD $0x4e301c75 // and v21.16b, v3.16b, v16.16b
	WORD $0x4f0a54b7 // shl v23.16b, v5.16b, #2
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71eb5 // orr v21.16b, v21.16b, v23.16b
	WORD $0x4e301c96 // and v22.16b, v4.16b, v16.16b
	WORD $0x4f0a54d7 // shl v23.16b, v6.16b, #2
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71ed6 // orr v22.16b, v22.16b, v23.16b
	WORD $0x6f0c0438 // ushr v24.16b, v1.16b, #4
	WORD $0x4e311cb7 // and v23.16b, v5.16b, v17.16b
	WORD $0x4eb71f18 // orr v24.16b, v24.16b, v23.16b
	WORD $0x6f0c0459 // ushr v25.16b, v2.16b, #4
	WORD $0x4e311cd7 // and v23.16b, v6.16b, v17.16b
	WORD $0x4eb71f39 // orr v25.16b, v25.16b, v23.16b
	WORD $0x6f0c047a // ushr v26.16b, v3.16b, #4
	WORD $0x6f0e04b7 // ushr v23.16b, v5.16b, #2
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71f5a // orr v26.16b, v26.16b, v23.16b
	WORD $0x6f0c049b // ushr v27.16b, v4.16b, #4
	WORD $0x6f0e04d7 // ushr v23.16b, v6.16b, #2
	WORD $0x4e311ef7 // and v23.16b, v23.16b, v17.16b
	WORD $0x4eb71f7b // orr v27.16b, v27.16b, v23.16b
	WORD $0x6e328673 // sub v19.16b, v19.16b, v18.16b
	WORD $0x6e328694 // sub v20.16b, v20.16b, v18.16b
	WORD $0x6e3286b5 // sub v21.16b, v21.16b, v18.16b
	WORD $0x6e3286d6 // sub v22.16b, v22.16b, v18.16b
	WORD $0x6e328718 // sub v24.16b, v24.16b, v18.16b
	WORD $0x6e328739 // sub v25.16b, v25.16b, v18.16b
	WORD $0x6e32875a // sub v26.16b, v26.16b, v18.16b
	WORD $0x6e32877b // sub v27.16b, v27.16b, v18.16b
	WORD $0x4cdf20e1 // ld1 {v1.16b-v4.16b}, [x7], #64
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0x4f00041d // movi v29.4s, #0x0
	WORD $0x4f00041e // movi v30.4s, #0x0
	WORD $0x4f00041f // movi v31.4s, #0x0
	WORD $0x4e819660 // sdot v0.4s, v19.16b, v1.16b
	WORD $0x4e82969d // sdot v29.4s, v20.16b, v2.16b
	WORD $0x4e8396be // sdot v30.4s, v21.16b, v3.16b
	WORD $0x4e8496df // sdot v31.4s, v22.16b, v4.16b
	WORD $0x4eb1b800 // addv s0, v0.4s
	WORD $0x4eb1bbbd // addv s29, v29.4s
	WORD $0x4eb1bbde // addv s30, v30.4s
	WORD $0x4eb1bbff // addv s31, v31.4s
	WORD $0x0d9f8060 // st1 {v0.s}[0], [x3], #4
	WORD $0x0d9f807d // st1 {v29.s}[0], [x3], #4
	WORD $0x0d9f807e // st1 {v30.s}[0], [x3], #4
	WORD $0x0d9f807f // st1 {v31.s}[0], [x3], #4
	WORD $0x4cdf20e1 // ld1 {v1.16b-v4.16b}, [x7], #64
	WORD $0x4f000400 // movi v0.4s, #0x0
	WORD $0x4f00041d // movi v29.4s, #0x0
	WORD $0x4f00041e // movi v30.4s, #0x0
	WORD $0x4f00041f // movi v31.4s, #0x0
	WORD $0x4e819700 // sdot v0.4s, v24.16b, v1.16b
	WORD $0x4e82973d // sdot v29.4s, v25.16b, v2.16b
	WORD $0x4e83975e // sdot v30.4s, v26.16b, v3.16b
	WORD $0x4e84977f // sdot v31.4s, v27.16b, v4.16b
	WORD $0x4eb1b800 // addv s0, v0.4s
	WORD $0x4eb1bbbd // addv s29, v29.4s
	WORD $0x4eb1bbde // addv s30, v30.4s
	WORD $0x4eb1bbff // addv s31, v31.4s
	WORD $0x0d9f8060 // st1 {v0.s}[0], [x3], #4
	WORD $0x0d9f807d // st1 {v29.s}[0], [x3], #4
	WORD $0x0d9f807e // st1 {v30.s}[0], [x3], #4
	WORD $0x0d9f807f // st1 {v31.s}[0], [x3], #4
	WORD $0xf10004c6 // subs x6, x6, #0x1
	WORD $0x54fff6a1 // b.ne 1d8 <q4k_end+0x20>
	WORD $0x91034821 // add x1, x1, #0xd2
	WORD $0x91049042 // add x2, x2, #0x124
	WORD $0xf1000400 // subs x0, x0, #0x1
	WORD $0x54fff5a1 // b.ne 1c8 <q4k_end+0x10>
	RET
