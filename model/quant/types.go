// Package quant implements ggml's tensor element types: their block layouts
// and sizes, bit-exact dequantisation, ggml's reference quantisers, and fast
// quantised matrix-vector products (MatMul) that follow ggml-cpu's scheme of
// quantising the activations once per call to the weight type's vec_dot type.
//
// All functions are safe for concurrent use unless stated otherwise; a Pool
// runs one MatMul at a time.
package quant

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Functions wrap them with %w and add context.
var (
	// ErrUnknownType is returned for a type id this package does not know.
	ErrUnknownType = errors.New("quant: unknown tensor type")
	// ErrUnsupported is returned for a known type whose (de)quantisation is not implemented.
	ErrUnsupported = errors.New("quant: operation not supported for type")
	// ErrSize is returned when a length is not a multiple of the block size or
	// the source and destination sizes disagree.
	ErrSize = errors.New("quant: bad size")
)

// Type is a ggml tensor element type; the values are ggml's enum ggml_type ids
// and are stored as such in GGUF files.
type Type uint32

// ggml type ids (ggml.h enum ggml_type). Gaps are ids ggml removed (4, 5: Q4_2, Q4_3).
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
)

// Block sizes of the quantised formats (ggml-common.h).
const (
	// QK is the block length of the 32-element formats (Q4_0 ... Q8_1, IQ4_NL).
	QK = 32
	// QKK is the super-block length of the K-quants and IQ4_XS.
	QKK = 256
)

type typeInfo struct {
	name       string
	blockSize  int // elements per block
	blockBytes int // bytes per block
}

// traits lists every type GGUF files may hold, so a parser can size tensors
// even of types this package cannot dequantise. Sizes follow ggml-common.h.
var traits = map[Type]typeInfo{
	F32:     {"F32", 1, 4},
	F16:     {"F16", 1, 2},
	Q4_0:    {"Q4_0", QK, 2 + QK/2},
	Q4_1:    {"Q4_1", QK, 4 + QK/2},
	Q5_0:    {"Q5_0", QK, 2 + 4 + QK/2},
	Q5_1:    {"Q5_1", QK, 4 + 4 + QK/2},
	Q8_0:    {"Q8_0", QK, 2 + QK},
	Q8_1:    {"Q8_1", QK, 4 + QK},
	Q2_K:    {"Q2_K", QKK, QKK/16 + QKK/4 + 4},
	Q3_K:    {"Q3_K", QKK, QKK/8 + QKK/4 + 12 + 2},
	Q4_K:    {"Q4_K", QKK, 4 + 12 + QKK/2},
	Q5_K:    {"Q5_K", QKK, 4 + 12 + QKK/8 + QKK/2},
	Q6_K:    {"Q6_K", QKK, QKK/2 + QKK/4 + QKK/16 + 2},
	Q8_K:    {"Q8_K", QKK, 4 + QKK + QKK/16*2},
	IQ2_XXS: {"IQ2_XXS", QKK, 2 + QKK/8*2},
	IQ2_XS:  {"IQ2_XS", QKK, 2 + QKK/8*2 + QKK/32},
	IQ3_XXS: {"IQ3_XXS", QKK, 2 + 3*QKK/8},
	IQ1_S:   {"IQ1_S", QKK, 2 + QKK/8 + QKK/16},
	IQ4_NL:  {"IQ4_NL", QK, 2 + QK/2},
	IQ3_S:   {"IQ3_S", QKK, 2 + QKK/4 + QKK/32 + QKK/8 + QKK/64},
	IQ2_S:   {"IQ2_S", QKK, 2 + QKK/4 + QKK/16},
	IQ4_XS:  {"IQ4_XS", QKK, 2 + 2 + QKK/64 + QKK/2},
	I8:      {"I8", 1, 1},
	I16:     {"I16", 1, 2},
	I32:     {"I32", 1, 4},
	I64:     {"I64", 1, 8},
	F64:     {"F64", 1, 8},
	IQ1_M:   {"IQ1_M", QKK, QKK/8 + QKK/16 + QKK/32},
	BF16:    {"BF16", 1, 2},
	TQ1_0:   {"TQ1_0", QKK, 2 + QKK/64 + (QKK-4*QKK/64)/5},
	TQ2_0:   {"TQ2_0", QKK, 2 + QKK/4},
	MXFP4:   {"MXFP4", QK, 1 + QK/2},
}

// Known reports whether t is a ggml type id this package knows the size of.
func (t Type) Known() bool { _, ok := traits[t]; return ok }

// String returns ggml's upper-case name of the type ("Q4_K", "F16"), or
// "Type(N)" for an unknown id.
func (t Type) String() string {
	if ti, ok := traits[t]; ok {
		return ti.name
	}
	return fmt.Sprintf("Type(%d)", uint32(t))
}

// BlockSize returns the number of elements in one block (1 for float types),
// or 0 for an unknown type.
func (t Type) BlockSize() int { return traits[t].blockSize }

// BlockBytes returns the number of bytes of one block, or 0 for an unknown type.
func (t Type) BlockBytes() int { return traits[t].blockBytes }

// RowBytes returns the number of bytes that n elements of type t occupy.
// n must be a non-negative multiple of the block size.
func (t Type) RowBytes(n int) (int, error) {
	ti, ok := traits[t]
	if !ok {
		return 0, fmt.Errorf("%w: %d", ErrUnknownType, uint32(t))
	}
	if n < 0 || n%ti.blockSize != 0 {
		return 0, fmt.Errorf("%w: %d elements is not a multiple of %s block size %d", ErrSize, n, ti.name, ti.blockSize)
	}
	return n / ti.blockSize * ti.blockBytes, nil
}

// ParseType parses a type name case-insensitively ("q4_k", "Q8_0", "f16", "bf16").
func ParseType(s string) (Type, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	for t, ti := range traits {
		if ti.name == u {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownType, s)
}

// Types returns every known type id in ascending order.
func Types() []Type {
	out := make([]Type, 0, len(traits))
	for t := Type(0); t < 64; t++ {
		if _, ok := traits[t]; ok {
			out = append(out, t)
		}
	}
	return out
}
