package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// matmulTypes are the weight types MatMul has kernels for.
var matmulTypes = append([]Type{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS}, iqDotTypes...)

func randVec(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64()) * scale
	}
	return v
}

// iqDotTypes are the 2- and 3-bit i-quants: MatMul multiplies them with
// kernels of their own, but Quantize cannot make them.
var iqDotTypes = []Type{IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S}

// quantMatrix quantises random weights to typ and returns the matrix and its
// dequantised values (what the matrix really holds). The types Quantize
// cannot make (iqDotTypes) get random blocks (rawWeights): every codebook
// index, sign and scale.
func quantMatrix(t testing.TB, r *rand.Rand, typ Type, rows, cols int) (*Matrix, []float32) {
	nb, err := typ.RowBytes(cols)
	require.NoError(t, err)
	var data []byte
	if CanQuantize(typ) {
		data = make([]byte, nb*rows)
		require.NoError(t, Quantize(typ, randVec(r, rows*cols, 0.05), data))
	} else {
		data = rawWeights(r, typ, rows*cols)
	}
	deq := make([]float32, rows*cols)
	require.NoError(t, Dequantize(typ, data, deq))
	return &Matrix{Type: typ, Rows: rows, Cols: cols, Data: data}, deq
}

// rawWeights returns rows of random weight bytes of type typ (every bit
// pattern of the quants, including -128 for Q8_0 and all 6-bit K-quant
// scales) with finite f16 scales.
func rawWeights(r *rand.Rand, typ Type, cols int) []byte {
	rb, _ := typ.RowBytes(cols)
	w := make([]byte, rb)
	for i := range w {
		w[i] = byte(r.Uint32())
	}
	bb := typ.BlockBytes()
	for b := 0; b < len(w); b += bb {
		for _, off := range f16Offsets(typ) {
			h := F32ToF16(float32(r.NormFloat64()) * 0.01)
			w[b+off], w[b+off+1] = byte(h), byte(h>>8)
		}
	}
	return w
}

// f16Offsets is where a block of typ keeps its f16 scales (d, and dmin
// where it has one).
func f16Offsets(typ Type) []int {
	switch typ {
	case Q2_K:
		return []int{80, 82}
	case Q3_K:
		return []int{108}
	case Q4_K, Q5_K:
		return []int{0, 2}
	case Q6_K:
		return []int{208}
	}
	return []int{0}
}

// relTol is the error bound relative to sum |w*x| that the activation
// quantisation of each vec_dot type allows: 8-bit activations lose up to
// half a step of amax/127 per element, F16/BF16 their mantissa precision.
func relTol(typ Type) float64 {
	switch vecDotType(typ) {
	case F32:
		return 1e-5
	case F16:
		return 2e-3
	case BF16:
		return 1e-2
	}
	return 2e-2
}

func TestMatMulMatchesDequantizedDot(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pool := NewPool(3)
	defer pool.Close()
	type shape struct{ rows, cols, n int }
	for _, typ := range matmulTypes {
		shapes := []shape{{37, 512, 1}, {37, 512, 3}}
		if typ == Q4_K || typ == Q8_0 || typ == F32 {
			// Batches larger than one activation tile (tileBytes).
			shapes = append(shapes, shape{9, 4096, 70})
		}
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("%s/%dx%d/n=%d", typ, sh.rows, sh.cols, sh.n), func(t *testing.T) {
				rows, cols, n := sh.rows, sh.cols, sh.n
				m, deq := quantMatrix(t, r, typ, rows, cols)
				x := randVec(r, n*cols, 1)
				dst := make([]float32, n*rows)
				MatMul(pool, dst, m, x, n)
				for i := 0; i < n; i++ {
					xi := x[i*cols : (i+1)*cols]
					for row := 0; row < rows; row++ {
						var want, mag float64
						for c := 0; c < cols; c++ {
							p := float64(deq[row*cols+c]) * float64(xi[c])
							want += p
							mag += math.Abs(p)
						}
						got := float64(dst[i*rows+row])
						if math.Abs(want-got) > relTol(typ)*mag+1e-6 {
							t.Fatalf("vector %d row %d: got %v, want %v (tolerance %v)", i, row, got, want, relTol(typ)*mag+1e-6)
						}
					}
				}
			})
		}
	}
}

func TestMatMulSingleThreadEqualsParallel(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p1, p4 := NewPool(1), NewPool(4)
	defer p1.Close()
	defer p4.Close()
	for _, typ := range matmulTypes {
		// 67×2048×2 multiply-adds: enough work for 4 workers (minMACsPerWorker).
		m, _ := quantMatrix(t, r, typ, 67, 2048)
		x := randVec(r, 2*2048, 1)
		a, b := make([]float32, 2*67), make([]float32, 2*67)
		MatMul(p1, a, m, x, 2)
		MatMul(p4, b, m, x, 2)
		require.Equal(t, a, b, typ.String())
	}
}

func TestMatMulNoAllocSteadyState(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	p := NewPool(2)
	defer p.Close()
	for _, typ := range []Type{F32, Q8_0, Q4_K, F16, IQ2_XXS} {
		m, _ := quantMatrix(t, r, typ, 64, 256)
		x := randVec(r, 4*256, 1)
		dst := make([]float32, 4*64)
		MatMul(p, dst, m, x, 4) // warm up scratch
		allocs := testing.AllocsPerRun(20, func() { MatMul(p, dst, m, x, 4) })
		require.Zero(t, allocs, typ.String())
	}
}

func TestPoolRunCoversRange(t *testing.T) {
	for _, threads := range []int{1, 2, 5} {
		p := NewPool(threads)
		require.Equal(t, threads, p.Threads())
		for _, n := range []int{0, 1, 3, 100} {
			hits := make([]int32, n)
			p.Run(n, func(w, s, e int) {
				require.True(t, w >= 0 && w < threads)
				for i := s; i < e; i++ {
					hits[i]++
				}
			})
			for i, h := range hits {
				require.EqualValues(t, 1, h, "threads %d n %d index %d", threads, n, i)
			}
		}
		p.Close()
		p.Close()
	}
}

func TestHalfConversions(t *testing.T) {
	// Exhaustive: every half converts to float32 and back unchanged (NaNs stay NaN).
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		back := F32ToF16(f)
		if f != f {
			require.True(t, back&0x7c00 == 0x7c00 && back&0x3ff != 0, "NaN %#x", h)
			continue
		}
		require.Equal(t, uint16(h), back, "half %#x -> %v", h, f)
	}
	cases := []struct {
		f    float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e9, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, {2.98e-08, 0x0000},
		{1 + 1.0/2048, 0x3c00},          // tie, rounds to even
		{1 + 3.0/2048, 0x3c02},          // tie, rounds to even (up)
		{6.103515625e-05, 0x0400},       // smallest normal
		{6.097555160522461e-05, 0x03ff}, // largest subnormal
		{float32(math.Copysign(0, -1)), 0x8000},
	}
	for _, c := range cases {
		require.Equal(t, c.want, F32ToF16(c.f), "%v", c.f)
	}
	require.Equal(t, uint16(0x3f80), F32ToBF16(1))
	require.Equal(t, uint16(0x3f80), F32ToBF16(math.Float32frombits(0x3f808000))) // tie to even (down)
	require.Equal(t, uint16(0x3f82), F32ToBF16(math.Float32frombits(0x3f818000))) // tie to even (up)
	require.Equal(t, float32(1), BF16ToF32(0x3f80))
	require.Equal(t, uint16(0x7fc1), F32ToBF16(math.Float32frombits(0x7f810000))) // NaN made quiet
}

func TestTypeSizes(t *testing.T) {
	cases := []struct {
		typ         Type
		name        string
		block, size int
	}{
		{F32, "F32", 1, 4}, {F16, "F16", 1, 2}, {BF16, "BF16", 1, 2},
		{Q4_0, "Q4_0", 32, 18}, {Q4_1, "Q4_1", 32, 20}, {Q5_0, "Q5_0", 32, 22}, {Q5_1, "Q5_1", 32, 24},
		{Q8_0, "Q8_0", 32, 34}, {Q8_1, "Q8_1", 32, 36}, {Q2_K, "Q2_K", 256, 84}, {Q3_K, "Q3_K", 256, 110},
		{Q4_K, "Q4_K", 256, 144}, {Q5_K, "Q5_K", 256, 176}, {Q6_K, "Q6_K", 256, 210}, {Q8_K, "Q8_K", 256, 292},
		{IQ4_NL, "IQ4_NL", 32, 18}, {IQ4_XS, "IQ4_XS", 256, 136}, {IQ2_XXS, "IQ2_XXS", 256, 66},
		{IQ3_S, "IQ3_S", 256, 110}, {TQ1_0, "TQ1_0", 256, 54}, {TQ2_0, "TQ2_0", 256, 66}, {MXFP4, "MXFP4", 32, 17},
	}
	for _, c := range cases {
		require.Equal(t, c.name, c.typ.String())
		require.Equal(t, c.block, c.typ.BlockSize(), c.name)
		require.Equal(t, c.size, c.typ.BlockBytes(), c.name)
		p, err := ParseType(c.name)
		require.NoError(t, err)
		require.Equal(t, c.typ, p)
	}
	p, err := ParseType("q4_k")
	require.NoError(t, err)
	require.Equal(t, Q4_K, p)
	_, err = ParseType("q9_9")
	require.ErrorIs(t, err, ErrUnknownType)
	require.Equal(t, "Type(99)", Type(99).String())
	n, err := Q4_K.RowBytes(512)
	require.NoError(t, err)
	require.Equal(t, 288, n)
	_, err = Q4_K.RowBytes(100)
	require.ErrorIs(t, err, ErrSize)
	_, err = Type(99).RowBytes(32)
	require.ErrorIs(t, err, ErrUnknownType)
}

func TestDequantizeQuantizeErrors(t *testing.T) {
	require.ErrorIs(t, Dequantize(Q4_0, make([]byte, 17), make([]float32, 32)), ErrSize)
	require.ErrorIs(t, Dequantize(Q4_0, make([]byte, 18), make([]float32, 31)), ErrSize)
	require.ErrorIs(t, Dequantize(I32, make([]byte, 1024), make([]float32, 256)), ErrUnsupported)
	require.ErrorIs(t, Dequantize(Type(77), nil, nil), ErrUnknownType)
	require.ErrorIs(t, Quantize(Q8_0, make([]float32, 32), make([]byte, 33)), ErrSize)
	require.ErrorIs(t, Quantize(IQ2_XXS, make([]float32, 256), make([]byte, 66)), ErrUnsupported)
}

type countTask struct{ hits []atomic.Int32 }

func (c *countTask) run(_, s, e int) {
	for i := s; i < e; i++ {
		c.hits[i].Add(1)
	}
}

func TestPoolChunkedCoversRange(t *testing.T) {
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, n := range []int{1, 10, 100} {
			for _, chunk := range []int{0, 1, 3, 7, 1000} {
				c := &countTask{hits: make([]atomic.Int32, n)}
				p.mu.Lock()
				p.runLockedN(n, threads, chunk, c)
				p.mu.Unlock()
				for i := range c.hits {
					require.EqualValues(t, 1, c.hits[i].Load(), "threads %d n %d chunk %d index %d", threads, n, chunk, i)
				}
			}
		}
		p.Close()
	}
}

func TestHalfSliceConversions(t *testing.T) {
	// Every half, through the bulk converter, equals the scalar one.
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	got := make([]float32, len(src)+3)
	F16ToF32s(got, src)
	for i, h := range src {
		want := F16ToF32(h)
		if math.Float32bits(got[i]) != math.Float32bits(want) {
			t.Fatalf("half %#x: got %#x, want %#x", h, math.Float32bits(got[i]), math.Float32bits(want))
		}
	}
	// Floats: every half's value, midpoints (ties), random bits, specials.
	r := rand.New(rand.NewPCG(17, 18))
	var fs []float32
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		fs = append(fs, f, math.Nextafter32(f, float32(math.Inf(1))))
	}
	for i := 0; i < 1<<16; i++ {
		fs = append(fs, math.Float32frombits(r.Uint32()))
	}
	fs = append(fs, 65504, 65519.99, 65520, 1e-8, -1e-8, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08)
	halves := make([]uint16, len(fs)+5)
	F32ToF16s(halves, fs)
	for i, f := range fs {
		want := F32ToF16(f)
		if f != f {
			if halves[i]&0x7c00 != 0x7c00 || halves[i]&0x3ff == 0 {
				t.Fatalf("NaN %#x -> %#x", math.Float32bits(f), halves[i])
			}
			continue
		}
		if halves[i] != want {
			t.Fatalf("%v (%#x): got %#x, want %#x", f, math.Float32bits(f), halves[i], want)
		}
	}
	require.Zero(t, halves[len(fs)], "nothing written past min(len(dst), len(src))")
}

// TestMatMulBatchInvariant: a vector's results are bit-identical whether it
// is multiplied alone or in a batch (the engine compares batched prompt
// evaluation with token-by-token evaluation), for every type.
func TestMatMulBatchInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	p := NewPool(3)
	defer p.Close()
	for _, typ := range matmulTypes {
		const rows, cols, n = 19, 512, 9
		m, _ := quantMatrix(t, r, typ, rows, cols)
		x := randVec(r, n*cols, 1)
		batch := make([]float32, n*rows)
		MatMul(p, batch, m, x, n)
		one := make([]float32, rows)
		for i := 0; i < n; i++ {
			MatMul(p, one, m, x[i*cols:(i+1)*cols], 1)
			for row := range one {
				if math.Float32bits(one[row]) != math.Float32bits(batch[i*rows+row]) {
					t.Fatalf("%s vector %d row %d: alone %v, in batch %v", typ, i, row, one[row], batch[i*rows+row])
				}
			}
		}
	}
}

// quantizeRowQ8_0Ref is quantizeRowQ8_0 as first written (math.RoundToEven).
func quantizeRowQ8_0Ref(x []float32, dst []byte) {
	for i := 0; i < len(x)/QK; i++ {
		xb := x[i*QK : (i+1)*QK]
		b := dst[i*34 : (i+1)*34]
		var amax float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax = a
			}
		}
		binary.LittleEndian.PutUint16(b, F32ToF16(amax/127))
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		for j, v := range xb {
			b[2+j] = byte(int8(math.RoundToEven(float64(v * id))))
		}
	}
}

// TestQuantizeRowQ8_0MatchesRoundToEven checks the Q8_0 activation
// quantiser byte for byte against the math.RoundToEven formulation, on random
// blocks, blocks of exact ties (k + 0.5 after scaling), and blocks with
// zeros, infinities and NaNs.
func TestQuantizeRowQ8_0MatchesRoundToEven(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	const blocks = 4096
	x := make([]float32, blocks*QK)
	for bi := 0; bi < blocks; bi++ {
		xb := x[bi*QK : (bi+1)*QK]
		switch bi % 4 {
		case 0:
			for j := range xb {
				xb[j] = float32(r.NormFloat64()) * float32(math.Ldexp(1, r.IntN(40)-20))
			}
		case 1: // ties: amax = 127, so v*id = v exactly
			for j := range xb {
				xb[j] = float32(r.IntN(254)-127) + 0.5
			}
			xb[0] = 127
		case 2:
			for j := range xb {
				xb[j] = float32(r.IntN(5) - 2)
			}
		case 3:
			for j := range xb {
				xb[j] = float32(r.NormFloat64())
			}
			specials := []float32{0, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0x7fc01234)}
			xb[r.IntN(QK)] = specials[r.IntN(len(specials))]
		}
	}
	want := make([]byte, blocks*34)
	got := make([]byte, blocks*34)
	quantizeRowQ8_0Ref(x, want)
	quantizeRowQ8_0(x, got)
	require.Equal(t, want, got)
}

// TestMatMulF32EqualsDotF32 checks every F32 product of a batch against
// DotF32 bit for bit, over shapes that reach each path of the F32 batch
// kernel: odd rows, vectors left over by threes, tails of eight and of
// fewer floats, and batches split into tiles.
func TestMatMulF32EqualsDotF32(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	p := NewPool(2)
	defer p.Close()
	for _, s := range []struct{ rows, cols, n int }{
		{1, 8, 3}, {2, 40, 3}, {7, 512, 11}, {5, 520, 4}, {4, 100, 7}, {3, 8192, 11}, {6, 64, 2}, {3, 264, 17}, {2, 8, 9},
		// One vector, and a tile of one (8192 columns: tiles of 8).
		{7, 512, 1}, {37, 100, 1}, {64, 4096, 1}, {3, 13, 1}, {3, 8192, 9},
	} {
		m, _ := quantMatrix(t, r, F32, s.rows, s.cols)
		x := randVec(r, s.n*s.cols, 1)
		got := make([]float32, s.n*s.rows)
		MatMul(p, got, m, x, s.n)
		for i := range s.n {
			for row := range s.rows {
				want := DotF32(bytesToF32(m.Data[row*4*s.cols:(row+1)*4*s.cols]), x[i*s.cols:(i+1)*s.cols])
				if math.Float32bits(want) != math.Float32bits(got[i*s.rows+row]) {
					t.Fatalf("%d×%d, %d vectors: vector %d row %d: DotF32 %v, MatMul %v", s.rows, s.cols, s.n, i, row, want, got[i*s.rows+row])
				}
			}
		}
	}
}

// TestMatMulsMatchesMatMul checks MatMuls against separate MatMul calls
// bit for bit: matrices that share the activations' quantised form and
// matrices that do not (Q4_K and Q6_K share Q8_K; Q4_0's repacked kernel
// takes its own blocks; F32 none), repacked or not, one and two workers,
// several batch sizes; a matrix of no rows is skipped; steady-state calls
// allocate nothing.
func TestMatMulsMatchesMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	const cols = 512
	sets := [][]Type{{Q4_K, Q4_K, Q6_K}, {Q4_0, Q4_K, F32}, {Q8_0, Q8_0}, {Q4_K}, {Q4_0, Q4_0, Q5_0}}
	for _, threads := range []int{1, 2} {
		p := NewPool(threads)
		for _, set := range sets {
			mats := make([]*Matrix, len(set))
			for i, typ := range set {
				mats[i], _ = quantMatrix(t, r, typ, 48+16*i, cols)
				if i != 1 {
					mats[i].Repack() // the second of a set stays in the file's layout
				}
			}
			// 70 vectors of 512: past minQuantPerWorker, quantised by the workers.
			for _, n := range []int{1, 3, 8, 17, 70} {
				x := randVec(r, n*cols, 1)
				prods := make([]Product, len(set))
				want := make([][]float32, len(set))
				for i, m := range mats {
					want[i] = make([]float32, n*m.Rows)
					MatMul(p, want[i], m, x, n)
					prods[i] = Product{Dst: make([]float32, n*m.Rows), M: m}
				}
				MatMuls(p, x, n, prods)
				for i := range prods {
					for k := range want[i] {
						require.Equal(t, math.Float32bits(want[i][k]), math.Float32bits(prods[i].Dst[k]), "threads=%d %v n=%d product %d at %d", threads, set, n, i, k)
					}
				}
				require.Zero(t, testing.AllocsPerRun(5, func() { MatMuls(p, x, n, prods) }), "allocations")
			}
		}
		empty := &Matrix{Type: Q4_K, Rows: 0, Cols: cols}
		m, _ := quantMatrix(t, r, Q4_K, 16, cols)
		x := randVec(r, cols, 1)
		got, want := make([]float32, 16), make([]float32, 16)
		MatMul(p, want, m, x, 1)
		MatMuls(p, x, 1, []Product{{M: empty}, {Dst: got, M: m}})
		require.Equal(t, want, got)
		require.Panics(t, func() { MatMuls(p, x, 1, make([]Product, MaxProducts+1)) })
		p.Close()
	}
}
