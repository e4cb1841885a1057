package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Matrix is a row-major weight matrix in ggml layout: Rows rows of Cols
// elements each (ggml's ne0 = Cols, ne1 = Rows), every row stored as
// Cols/BlockSize consecutive blocks. Data usually aliases a memory-mapped
// GGUF file and is never written. Repack may add a copy in the layout of a
// multi-row kernel, which MatMul then reads instead of Data.
type Matrix struct {
	Type       Type
	Rows, Cols int
	Data       []byte

	packed []byte // nil, or Data repacked (see Repack)
}

// vecDotType returns the type the activations are quantised to for a
// weight type, exactly as ggml-cpu's type_traits_cpu[t].vec_dot_type.
func vecDotType(t Type) Type {
	switch t {
	case Q4_0, Q5_0, Q8_0, IQ4_NL, MXFP4:
		return Q8_0
	case Q4_1, Q5_1:
		return Q8_1
	case Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S:
		return Q8_K
	case F16:
		return F16
	case BF16:
		return BF16
	default:
		return F32
	}
}

// VecDotType reports the type MatMul quantises activations to for weights of
// type t, and whether MatMul supports t at all.
func VecDotType(t Type) (Type, bool) {
	_, ok := dotKernels[t]
	return vecDotType(t), ok || t == F32
}

// dotFunc computes the dot product of one weight row w (cols elements of the
// weight type) with one activation row x (cols elements of the vec_dot type).
type dotFunc func(cols int, w, x []byte) float32

// genericKernels are the portable reference kernels.
var genericKernels = map[Type]dotFunc{
	F16:    dotF16Generic,
	BF16:   dotBF16Generic,
	Q4_0:   dotQ4_0Generic,
	Q4_1:   dotQ4_1Generic,
	Q5_0:   dotQ5_0Generic,
	Q5_1:   dotQ5_1Generic,
	Q8_0:   dotQ8_0Generic,
	IQ4_NL: dotIQ4NLGeneric,
	MXFP4:  dotMXFP4Generic,
	// The 2- and 3-bit i-quants (dot_iq.go): Go's integer loops, no SIMD.
	IQ2_XXS: dotIQ2XXSGeneric,
	IQ2_XS:  dotIQ2XSGeneric,
	IQ2_S:   dotIQ2SGeneric,
	IQ3_XXS: dotIQ3XXSGeneric,
	IQ3_S:   dotIQ3SGeneric,
	Q2_K:    dotQ2KGeneric,
	Q3_K:    dotQ3KGeneric,
	Q4_K:    dotQ4KGeneric,
	Q5_K:    dotQ5KGeneric,
	Q6_K:    dotQ6KGeneric,
	IQ4_XS:  dotIQ4XSGeneric,
}

// dotKernels are the kernels MatMul uses: the generic ones, replaced at
// init by SIMD versions where the CPU supports them (see useSIMD). It is
// written only during package init and by tests.
var dotKernels = func() map[Type]dotFunc {
	m := make(map[Type]dotFunc, len(genericKernels)+len(dequantTypes))
	for t, k := range genericKernels {
		m[t] = k
	}
	for _, t := range dequantTypes {
		m[t] = dotDequant(t)
	}
	return m
}()

// dot4Func computes the dot products of one weight row w with the four
// activation rows at x, x[xB:], x[2*xB:], x[3*xB:] (each cols elements of the
// vec_dot type) into out. Unpacking the weights once for four vectors is
// what makes batches (prompt processing) faster than four dotFunc calls.
type dot4Func func(cols int, w, x []byte, xB int, out *[4]float32)

// dot4Kernels are the four-vector kernels MatMul uses for n >= 4, filled by
// useSIMD on architectures that have them; types without one use dotFunc.
var dot4Kernels = map[Type]dot4Func{}

// dot8Func is dot4Func for eight activation vectors; the results must be
// bit-identical to eight single-vector calls.
type dot8Func func(cols int, w, x []byte, xB int, out *[8]float32)

// dot8Kernels are the eight-vector kernels MatMul uses for n >= 8 (amd64
// with AVX-512 VNNI), filled by useSIMD.
var dot8Kernels = map[Type]dot8Func{}

// dot16Func is dot4Func for sixteen activation vectors.
type dot16Func func(cols int, w, x []byte, xB int, out *[16]float32)

// dot16Kernels are the sixteen-vector kernels MatMul uses for n >= 16.
var dot16Kernels = map[Type]dot16Func{}

// quantizeActivations converts x (len a multiple of the block size of t) to
// vec_dot type t into dst, as ggml-cpu's from_float for that type does.
func quantizeActivations(t Type, x []float32, dst []byte) {
	switch t {
	case Q8_0:
		quantizeRowQ8_0(x, dst)
	case Q8_1:
		quantizeRowQ8_1(x, dst)
	case Q8_K:
		quantizeRowQ8K(x, dst)
	case F16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range x {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case F32:
		for i, v := range x {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	}
}

// dequantTypes are the weight types without a product kernel of their own
// (IQ1_S, IQ1_M, the ternary types): dotDequant runs them, block by block
// through their dequantiser against float32 activations. llama.cpp
// quantises the activations to q8_K for them; this is slower, and closer
// to the weights' own values.
var dequantTypes = []Type{IQ1_S, IQ1_M, TQ1_0, TQ2_0}

// dotDequant is the product kernel of a type in dequantTypes.
func dotDequant(t Type) dotFunc {
	fn, bs, bb := dequantizers[t], t.BlockSize(), t.BlockBytes()
	return func(cols int, w, x []byte) float32 {
		var buf [QKK]float32
		var sum float32
		for b := 0; b < cols/bs; b++ {
			fn(w[b*bb:(b+1)*bb], buf[:bs])
			xs := x[4*b*bs : 4*(b+1)*bs]
			for i, v := range buf[:bs] {
				sum += v * math.Float32frombits(binary.LittleEndian.Uint32(xs[4*i:]))
			}
		}
		return sum
	}
}

// quantizeRowQ8_0 is ggml-cpu's x86 quantize_row_q8_0: d = amax/127,
// q = round-half-even(x*127/amax).
func quantizeRowQ8_0(x []float32, dst []byte) {
	for i := 0; i < len(x)/QK; i++ {
		xb := x[i*QK : (i+1)*QK]
		b := dst[i*34 : (i+1)*34]
		if quantQ8_0Block != nil && quantQ8_0Block(xb, b) {
			continue
		}
		var amax float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax = a
			}
		}
		d := amax / 127
		binary.LittleEndian.PutUint16(b, F32ToF16(d))
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		for j, v := range xb {
			// |v*id| <= 127, where nearestInt is round-half-even like
			// math.RoundToEven, at a fraction of the cost; a NaN (inf*0,
			// NaN input) gives 0 as int8(math.RoundToEven(NaN)) does.
			f := v * id
			q := nearestInt(f)
			if f != f {
				q = 0
			}
			b[2+j] = byte(int8(q))
		}
	}
}

// quantizeRowQ8_1 is ggml-cpu's x86 quantize_row_q8_1: like Q8_0 plus
// s = d * sum(q).
func quantizeRowQ8_1(x []float32, dst []byte) {
	for i := 0; i < len(x)/QK; i++ {
		xb := x[i*QK : (i+1)*QK]
		b := dst[i*36 : (i+1)*36]
		var amax float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax = a
			}
		}
		d := amax / 127
		binary.LittleEndian.PutUint16(b, F32ToF16(d))
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		var sum int32
		for j, v := range xb {
			q := int8(math.RoundToEven(float64(v * id)))
			sum += int32(q)
			b[4+j] = byte(q)
		}
		binary.LittleEndian.PutUint16(b[2:], F32ToF16(d*float32(sum)))
	}
}

// nearestInt is ggml's nearest_int: round-half-even via the 1.5*2^23 trick,
// valid for |f| <= 4194303.
func nearestInt(f float32) int32 {
	// float32(f) keeps an inlined caller's product (nearestInt(a*b)) from
	// being fused with this addition into an FMA (Go may fuse on arm64).
	v := math.Float32bits(float32(f) + 12582912)
	return int32(v&0x007fffff) - 0x00400000
}

// quantQ8_0Block and quantQ8_0SumsBlock, when set (amd64 with AVX-512),
// quantise one block as quantizeRowQ8_0 and quantizeRowQ8_0Sums do, bit
// for bit, or report false, having written nothing, for blocks they leave
// to the Go code (amax 0, non-finite values).
var quantQ8_0Block, quantQ8_0SumsBlock func(x []float32, dst []byte) bool

// quantQ8KBlock, when set (amd64 with AVX-512), quantises one Q8_K block
// exactly as quantizeRowQ8K does, or reports false, having written nothing,
// for blocks it leaves to the Go code (amax 0, non-finite values).
var quantQ8KBlock func(x []float32, dst []byte) bool

// quantizeRowQ8K is ggml's quantize_row_q8_K_ref. Block: d (float32),
// qs[256] int8, bsums[16] int16.
func quantizeRowQ8K(x []float32, dst []byte) {
	for i := 0; i < len(x)/QKK; i++ {
		xb := x[i*QKK : (i+1)*QKK]
		b := dst[i*292 : (i+1)*292]
		if quantQ8KBlock != nil && quantQ8KBlock(xb, b) {
			continue
		}
		var max, amax float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax, max = a, v
			}
		}
		if amax == 0 {
			clear(b)
			continue
		}
		iscale := -127 / max
		for j, v := range xb {
			q := nearestInt(iscale * v)
			if q > 127 {
				q = 127
			}
			b[4+j] = byte(int8(q))
		}
		for j := 0; j < 16; j++ {
			var s int16
			for _, q := range b[4+16*j : 4+16*j+16] {
				s += int16(int8(q))
			}
			binary.LittleEndian.PutUint16(b[4+QKK+2*j:], uint16(s))
		}
		binary.LittleEndian.PutUint32(b, math.Float32bits(1/iscale))
	}
}

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

// gemmF32R4 are the F32 kernels for four rows by one, two and three
// vectors (out: 4*nv products, row-major), nil where the CPU has none (set
// with the SIMD kernels).
var gemmF32R4 [3]func(n int, a *float32, astride int, b *float32, bstride int, out []float32)

// matmulJob is the Pool task of one MatMul call; the Pool owns one so that
// steady-state calls allocate nothing.
type matmulJob struct {
	m       *Matrix
	dst     []float32
	x       []float32
	xq      []byte
	n       int
	rowB    int // bytes per weight row
	xB      int // bytes per quantised activation row
	dot     dotFunc
	dot4    dot4Func // nil when the type has no four-vector kernel
	dot8    dot8Func // nil when the type has no eight-vector kernel
	dot16   dot16Func
	gemm    gemmR8Func  // non-nil: rows are read from m.packed in groups of RowGroup
	gemm16  gemmR16Func // non-nil: rows are read from m.packed sixteen at a time
	nb      int         // blocks per row (gemm)
	perCall int         // vectors per kernel call (gemm, gemm16)
	q8s     bool        // activations are q8sBlockBytes blocks (Q4_0's sixteen-row kernel)
	outs    [][16 * RowGroup]float32
	isF32   bool
	quantT  Type
}

// tileBytes bounds the quantised activations one worker sweeps per pass over
// its rows: with n vectors of xB bytes, vectors are processed in tiles of
// tileBytes/xB so a tile stays in L2 (256 KiB is half of a small L2) while
// each weight row, read once per tile, stays in L1 across the tile.
const tileBytes = 256 << 10

func (j *matmulJob) run(worker, start, end int) {
	m, n := j.m, j.n
	if j.isF32 {
		tile := max(1, tileBytes/(4*m.Cols))
		for i0 := 0; i0 < n; i0 += tile {
			i1 := min(n, i0+tile)
			r := start
			if gemmF32R4[0] != nil && m.Cols%8 == 0 && i1-i0 >= 2 {
				r = j.runF32R4(worker, start, end, i0, i1)
			}
			if i1-i0 == 1 {
				// One vector: one call for all the rows, the vector
				// as a and the rows as b (a product's operations are
				// DotF32's either way round), without a call and its
				// set-up per row.
				DotF32Tiled(j.dst[i0*m.Rows+r:i0*m.Rows+end], j.x[i0*m.Cols:(i0+1)*m.Cols], bytesToF32(m.Data[r*j.rowB:end*j.rowB]), m.Cols, m.Cols, TileF32)
				continue
			}
			out := j.outs[worker][:]
			for ; r < end; r++ {
				wf := bytesToF32(m.Data[r*j.rowB : (r+1)*j.rowB])
				// One call per len(out) vectors: DotF32Tiled over
				// contiguous vectors is DotF32 bit for bit, without a
				// call and its set-up per vector.
				for i := i0; i < i1; i += len(out) {
					k := min(len(out), i1-i)
					DotF32Tiled(out[:k], wf, j.x[i*m.Cols:(i+k)*m.Cols], m.Cols, m.Cols, TileF32)
					for a, v := range out[:k] {
						j.dst[(i+a)*m.Rows+r] = v
					}
				}
			}
		}
		return
	}
	if j.gemm != nil || j.gemm16 != nil {
		j.runPacked(worker, start, end)
		return
	}
	tile := max(16, tileBytes/j.xB)
	out := (*[4]float32)(j.outs[worker][:4]) // per-worker: a local would escape through dot4
	out8 := (*[8]float32)(j.outs[worker][:8])
	out16 := (*[16]float32)(j.outs[worker][:16])
	for i0 := 0; i0 < n; i0 += tile {
		i1 := min(n, i0+tile)
		for r := start; r < end; r++ {
			w := m.Data[r*j.rowB : (r+1)*j.rowB]
			i := i0
			if j.dot16 != nil {
				for ; i+16 <= i1; i += 16 {
					j.dot16(m.Cols, w, j.xq[i*j.xB:(i+16)*j.xB], j.xB, out16)
					for k, v := range out16 {
						j.dst[(i+k)*m.Rows+r] = v
					}
				}
			}
			if j.dot8 != nil {
				for ; i+8 <= i1; i += 8 {
					j.dot8(m.Cols, w, j.xq[i*j.xB:(i+8)*j.xB], j.xB, out8)
					for k, v := range out8 {
						j.dst[(i+k)*m.Rows+r] = v
					}
				}
			}
			if j.dot4 != nil {
				for ; i+4 <= i1; i += 4 {
					j.dot4(m.Cols, w, j.xq[i*j.xB:(i+4)*j.xB], j.xB, out)
					j.dst[i*m.Rows+r] = out[0]
					j.dst[(i+1)*m.Rows+r] = out[1]
					j.dst[(i+2)*m.Rows+r] = out[2]
					j.dst[(i+3)*m.Rows+r] = out[3]
				}
			}
			for ; i < i1; i++ {
				j.dst[i*m.Rows+r] = j.dot(m.Cols, w, j.xq[i*j.xB:(i+1)*j.xB])
			}
		}
	}
}

// gemmVectors is how many activation vectors runPacked hands the
// eight-row kernels per call: their widest pass (four vectors × eight
// rows fill the 16 accumulator registers of AVX-512). The sixteen-row
// kernels take r16Vectors.
const gemmVectors = 4

// runF32R4 computes rows [start, end) of an F32 product for vectors
// [i0, i1) with the four-row kernels (three vectors per call, then what is
// left), and returns the first row it left (fewer than four at the end).
// Every product is DotF32's bit for bit.
func (j *matmulJob) runF32R4(worker, start, end, i0, i1 int) int {
	m := j.m
	out := j.outs[worker][:12]
	r := start
	for ; r+4 <= end; r += 4 {
		w := bytesToF32(m.Data[r*j.rowB : (r+4)*j.rowB])
		for i := i0; i < i1; i += 3 {
			nv := min(3, i1-i)
			gemmF32R4[nv-1](m.Cols, &w[0], j.rowB, &j.x[i*m.Cols], 4*m.Cols, out)
			for h := range 4 {
				for v := range nv {
					j.dst[(i+v)*m.Rows+r+h] = out[nv*h+v]
				}
			}
		}
	}
	return r
}

// runPacked computes the passes [start, end) of a product from the
// repacked weights: a pass is one row group with an eight-row kernel,
// sixteen rows with the sixteen-row one (the results of a last group's
// padding rows are dropped). Vectors are tiled so a tile stays in L2 while each weight
// group is read once per tile, and handed to the kernel perCall at a
// time.
func (j *matmulJob) runPacked(worker, start, end int) {
	m, n := j.m, j.n
	groups, per := packedGroups(m.Rows), j.groupsPerPass()
	passB := len(m.packed) / ((groups + per - 1) / per)
	out := j.outs[worker][:]
	tile := max(16, tileBytes/j.xB)
	for i0 := 0; i0 < n; i0 += tile {
		i1 := min(n, i0+tile)
		for u := start; u < end; u++ {
			w := m.packed[u*passB : (u+1)*passB]
			r0 := per * u * RowGroup
			rows := min(per*RowGroup, m.Rows-r0)
			for i := i0; i < i1; i += j.perCall {
				na := min(j.perCall, i1-i)
				if j.gemm16 != nil {
					if rows == wideGroup {
						// Sixteen whole rows: straight into dst, each
						// vector's m.Rows apart (no copy per vector).
						j.gemm16(j.nb, w, j.xq[i*j.xB:], j.xB, na, j.dst[i*m.Rows+r0:], m.Rows)
						continue
					}
					j.gemm16(j.nb, w, j.xq[i*j.xB:], j.xB, na, out[:wideGroup*na], wideGroup)
				} else {
					if rows == RowGroup {
						j.gemm(j.nb, w, j.xq[i*j.xB:], j.xB, na, j.dst[i*m.Rows+r0:], m.Rows)
						continue
					}
					j.gemm(j.nb, w, j.xq[i*j.xB:], j.xB, na, out[:RowGroup*na], RowGroup)
				}
				for a := 0; a < na; a++ {
					copy(j.dst[(i+a)*m.Rows+r0:][:rows], out[per*RowGroup*a:])
				}
			}
		}
	}
}

// groupsPerPass is how many row groups a repacked kernel call covers.
func (j *matmulJob) groupsPerPass() int {
	if j.gemm16 != nil {
		return 2
	}
	return 1
}

// quantJob quantises the n activation vectors in parallel.
type quantJob struct{ j *matmulJob }

func (q *quantJob) run(worker, start, end int) {
	j := q.j
	for i := start; i < end; i++ {
		if j.q8s {
			quantizeRowQ8_0Sums(j.x[i*j.m.Cols:(i+1)*j.m.Cols], j.xq[i*j.xB:(i+1)*j.xB])
			continue
		}
		quantizeActivations(j.quantT, j.x[i*j.m.Cols:(i+1)*j.m.Cols], j.xq[i*j.xB:(i+1)*j.xB])
	}
}

// minQuantPerWorker is the least number of activations worth quantising
// on more than one worker: the AVX-512 quantisers take ~0.2 µs per 768
// floats, so eight vectors of a decode step are done before a hand-off to
// the workers and back would be.
const minQuantPerWorker = 1 << 15

// minMACsPerWorker is the least work (multiply-adds) worth waking another
// worker for: handing a job to a parked goroutine costs a few microseconds,
// about what 64K quantised multiply-adds take, so smaller products (the
// matrices of tiny models) run on fewer threads.
const minMACsPerWorker = 1 << 16

// MatMul computes dst[i*m.Rows+r] = dot(row r of m, x[i*m.Cols:(i+1)*m.Cols])
// for the n vectors in x. Like ggml's CPU backend, the activations are first
// quantised once to the weight type's vec_dot type (Q8_0, Q8_1, Q8_K, F16,
// BF16 or F32 — see VecDotType) and the dot products then run on quantised
// blocks with integer arithmetic; weights are never dequantised as a whole.
// Rows are split across the Pool's workers. Scratch memory lives in the Pool,
// so steady-state calls do not allocate. A repacked matrix (Matrix.Repack)
// is read from its copy, eight rows at a time by the multi-row kernels, with
// bit-identical results (Q4_0, Q4_K, Q5_K and Q6_K: sixteen at a time,
// with contracts of their own; see gemmQ4_0R16Generic, gemmQ4KR16Generic,
// gemmQ5KR16Generic, gemmQ6KR16Generic).
//
// MatMul panics if the sizes are inconsistent (len(x) < n*Cols,
// len(dst) < n*Rows, len(m.Data) too small, Cols not a multiple of the
// block size) or if the type is not supported (check with VecDotType);
// these are programming errors, like an out-of-range slice index.
func MatMul(p *Pool, dst []float32, m *Matrix, x []float32, n int) {
	if n <= 0 || m.Rows == 0 {
		return
	}
	checkProduct(dst, m, x, n)
	p.mu.Lock()
	defer p.mu.Unlock()
	j := &p.mms[0]
	p.prepare(j, dst, m, x, n)
	p.quantize(j, 0)
	p.runProducts(1)
}

// Product is one weight matrix of MatMuls and where its results go (as
// MatMul's dst).
type Product struct {
	Dst []float32
	M   *Matrix
}

// MaxProducts is how many products MatMuls takes at once: a layer's
// query, key and value matrices.
const MaxProducts = 3

// MatMuls computes MatMul(p, pr.Dst, pr.M, x, n) for every pr in prods
// (at most MaxProducts; matrices with no rows are skipped), with the
// results of separate MatMul calls, bit for bit. The activations are
// quantised once for all matrices that take them in the same form (the
// same vec_dot type and layout), and all products go to the workers as one
// job: a decode step multiplies the same vector with a layer's Q, K and V
// (and gate and up) matrices, and each hand-off to the workers and back
// costs microseconds. A Dst must not overlap x or another Dst (the
// products run in parallel, after all activations are quantised). Panics
// as MatMul does.
func MatMuls(p *Pool, x []float32, n int, prods []Product) {
	if n <= 0 {
		return
	}
	if len(prods) > MaxProducts {
		panic(fmt.Sprintf("quant.MatMuls: %d products (at most %d)", len(prods), MaxProducts))
	}
	for _, pr := range prods {
		if pr.M.Rows > 0 {
			checkProduct(pr.Dst, pr.M, x, n)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	k := 0
	for _, pr := range prods {
		if pr.M.Rows == 0 {
			continue
		}
		j := &p.mms[k]
		p.prepare(j, pr.Dst, pr.M, x, n)
		shared := false
		for i := 0; i < k && !shared; i++ {
			if o := &p.mms[i]; !j.isF32 && !o.isF32 && o.quantT == j.quantT && o.q8s == j.q8s && o.xB == j.xB {
				j.xq, shared = o.xq, true
			}
		}
		if !shared {
			p.quantize(j, k)
		}
		k++
	}
	p.runProducts(k)
}

// checkProduct panics when MatMul's arguments are inconsistent or its type
// has no kernel, before the Pool is touched.
func checkProduct(dst []float32, m *Matrix, x []float32, n int) {
	if _, ok := dotKernels[m.Type]; !ok && m.Type != F32 {
		panic("quant.MatMul: unsupported weight type " + m.Type.String())
	}
	rowB, err := m.Type.RowBytes(m.Cols)
	if err != nil {
		panic("quant.MatMul: " + err.Error())
	}
	if m.packed == nil && len(m.Data) < rowB*m.Rows || len(x) < n*m.Cols || len(dst) < n*m.Rows {
		panic("quant.MatMul: slice too short for matrix dimensions")
	}
}

// prepare sets j up for the product of m with the n vectors of x into
// dst: kernels, layouts and the activations' quantised form (not yet the
// quantised activations: see quantize). p.mu must be held.
func (p *Pool) prepare(j *matmulJob, dst []float32, m *Matrix, x []float32, n int) {
	rowB, _ := m.Type.RowBytes(m.Cols)
	*j = matmulJob{m: m, dst: dst, x: x, n: n, rowB: rowB, outs: p.outs}
	if m.Type == F32 {
		j.isF32 = true
		return
	}
	dot, ok := dotKernels[m.Type]
	if !ok {
		panic("quant.MatMul: unsupported weight type " + m.Type.String())
	}
	j.dot = dot
	if n >= 4 {
		j.dot4 = dot4Kernels[m.Type]
	}
	if n >= 8 {
		j.dot8 = dot8Kernels[m.Type]
	}
	if n >= 16 {
		j.dot16 = dot16Kernels[m.Type]
	}
	if m.packed != nil {
		if g, ok := gemmR8Kernels[m.Type]; ok {
			j.gemm, j.nb, j.perCall = g, m.Cols/m.Type.BlockSize(), gemmVectors
		}
		if g, ok := gemmR16Kernels[m.Type]; ok {
			j.gemm16, j.nb, j.perCall = g, m.Cols/m.Type.BlockSize(), max(1, r16Vectors[m.Type])
			j.q8s = m.Type == Q4_0
		}
	}
	j.quantT = vecDotType(m.Type)
	xB, err := j.quantT.RowBytes(m.Cols)
	if err != nil {
		panic("quant.MatMul: " + err.Error())
	}
	if j.q8s {
		xB = j.nb * q8sBlockBytes
	}
	j.xB = xB
}

// quantize quantises j's activations into the Pool's buffer slot (one
// per product of MatMuls), in parallel for several vectors. p.mu must be
// held.
func (p *Pool) quantize(j *matmulJob, slot int) {
	if j.isF32 {
		return
	}
	if cap(p.xq[slot]) < j.n*j.xB {
		p.xq[slot] = make([]byte, j.n*j.xB)
	}
	j.xq = p.xq[slot][:j.n*j.xB]
	p.qj.j = j
	if j.n*j.m.Cols < minQuantPerWorker {
		p.qj.run(0, 0, j.n)
	} else {
		p.runLocked(j.n, &p.qj)
	}
	p.qj.j = nil
}

// plan returns the units of j's work (row passes of a repacked matrix,
// else rows), how many units a worker claims at a time, and how many
// workers the product is worth.
func (j *matmulJob) plan(threads int) (units, chunk, used int) {
	m, n := j.m, j.n
	used = m.Rows * m.Cols * n / minMACsPerWorker
	if j.gemm != nil || j.gemm16 != nil {
		per := j.groupsPerPass()
		passes := (packedGroups(m.Rows) + per - 1) / per
		return passes, max((passes+4*threads-1)/(4*threads), minMACsPerWorker/4/(per*RowGroup*m.Cols*n)+1), used
	}
	// Chunks of rows claimed dynamically: about 4 per worker, but at least
	// minMACsPerWorker/4 multiply-adds each so claiming stays cheap.
	return m.Rows, max((m.Rows+4*threads-1)/(4*threads), minMACsPerWorker/4/(m.Cols*n)+1), used
}

// runProducts runs the k prepared and quantised products p.mms[:k] as one
// job of the workers, and clears them. p.mu must be held.
func (p *Pool) runProducts(k int) {
	defer clear(p.mms[:k])
	if k == 1 {
		units, chunk, used := p.mms[0].plan(p.threads)
		p.runLockedN(units, used, chunk, &p.mms[0])
		return
	}
	mj := &p.multi
	mj.k = k
	total, used := 0, 0
	for i := 0; i < k; i++ {
		units, chunk, u := p.mms[i].plan(p.threads)
		mj.units[i], mj.chunk[i], mj.first[i] = units, chunk, total
		total += (units + chunk - 1) / chunk
		used += u
	}
	mj.first[k] = total
	mj.jobs = &p.mms
	p.runLockedN(total, used, 1, mj)
	mj.jobs = nil
}

// multiJob runs several products as one job: its items are the products'
// chunks, product i's from first[i].
type multiJob struct {
	jobs  *[MaxProducts]matmulJob
	k     int
	units [MaxProducts]int
	chunk [MaxProducts]int
	first [MaxProducts + 1]int
}

func (mj *multiJob) run(worker, start, end int) {
	for c := start; c < end; c++ {
		i := 0
		for c >= mj.first[i+1] {
			i++
		}
		lo := (c - mj.first[i]) * mj.chunk[i]
		mj.jobs[i].run(worker, lo, min(lo+mj.chunk[i], mj.units[i]))
	}
}
