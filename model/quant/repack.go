package quant

import (
	"encoding/binary"
	"math"
)

// RowGroup is the number of weight rows a repacked matrix interleaves: the
// multi-row kernels compute RowGroup outputs per pass, so each loaded
// activation block serves eight rows and each unpacked weight block serves
// several activation vectors.
const RowGroup = 8

// q40GroupBytes is the size of one repacked Q4_0 block group: the eight
// rows' f16 scales (16 bytes) then 128 bytes of nibbles, exactly the bytes
// of the eight original 18-byte blocks, so repacking does not grow a matrix.
const q40GroupBytes = RowGroup * 18

// q8sBlockBytes is the size of an activation block of the repacked Q4_0
// kernel: int32 -8*sum(q), float32 d (the f16 scale, converted exactly),
// then the 32 int8 q of a Q8_0 block. The sum moves Q4_0's offset of 8 out
// of the kernel's loop, the float32 scale a conversion.
const q8sBlockBytes = 40

// q80GroupBytes is the size of one repacked Q8_0 block group: the eight
// rows' f16 scales, then 256 bytes of weights (8 × 34, no growth).
const q80GroupBytes = RowGroup * 34

// q50GroupBytes is the size of one repacked Q5_0 block group: the eight
// rows' f16 scales, their fifth bits (32 bytes), then 128 bytes of nibbles:
// 8 × 22, as in the file.
const q50GroupBytes = RowGroup * 22

// q4kGroupBytes is the size of one repacked Q4_K group (one super-block
// column of eight rows): d[8] and dmin[8] (f16, 32 bytes), the rows' 12
// bytes of packed 6-bit scales and mins as three arrays of eight dwords
// (96 bytes, decoded by the kernel for all rows at once), the nibbles (128
// bytes per row, in 32 chunks of 32): 8 × 144, as in the file.
const q4kGroupBytes = 32 + RowGroup*12 + RowGroup*128

// q40ColBytes and q4kColBytes are the sizes of a block column of the
// sixteen-row layouts (see repackQ4_0, repackQ4K): two groups' bytes, one
// row per dword lane.
const (
	q40ColBytes = 2 * q40GroupBytes
	q4kColBytes = 2 * q4kGroupBytes
)

// q5kColBytes is the size of a block column of the sixteen-row Q5_K
// layout (see repackQ5K).
const q5kColBytes = wideGroup * 176

// q5kQhOff is where fifth-bit chunk k (0-7) of a repacked Q5_K column
// starts, q5kQsOff nibble chunk c (0-31): chunks k of both alternate
// (the kernel's first sub-block pair reads them together, and two
// streams 512 bytes apart ran at 0.64x the single-row kernel from
// memory), then nibble chunks 8-31.
func q5kQhOff(k int) int { return 256 + 128*k }

// q5kQsOff is where nibble chunk c (0-31) of a repacked Q5_K column
// starts (see q5kQhOff).
func q5kQsOff(c int) int {
	if c < 8 {
		return q5kQhOff(c) + 64
	}
	return 256 + 1024 + 64*(c-8)
}

// The sixteen-row Q6_K layout (see repackQ6K): a block column is the
// sixteen rows' 210-byte super-blocks and 32 bytes of padding after their
// d, so that a column is 53 cache lines and every 64-byte load of the
// kernel one aligned line. (Without the padding, 52.5 lines, every other
// column's loads straddled two lines: from memory the kernel streamed
// 0.72-1.03× the single-row kernel's bytes, median 0.83, instead of
// 0.94-1.57×, median 1.22: model/quant's DESIGN.md.) The scales
// start at q6kScalesOff, the quants at q6kQuantsOff.
const (
	q6kColBytes  = wideGroup*210 + 32
	q6kScalesOff = 64
	q6kQuantsOff = q6kScalesOff + 4*64
)

// gemmR8Func multiplies one group of RowGroup repacked rows (nb block
// groups at w) with na activation vectors at x, x+xstride, ... into
// out[ostride*a+r] (ostride >= RowGroup; see gemmR16Func).
type gemmR8Func func(nb int, w, x []byte, xstride, na int, out []float32, ostride int)

// repackers convert a matrix of a type to its repacked layout.
var repackers = map[Type]func(m *Matrix, out []byte){Q4_0: repackQ4_0, Q5_0: repackQ5_0, Q8_0: repackQ8_0, Q4_K: repackQ4K, Q5_K: repackQ5K, Q6_K: repackQ6K}

// repackedSize is the size of a repacked matrix of a type per original
// block (RowGroup groups of blocks become one group).
var repackedSize = map[Type]int{Q4_0: q40GroupBytes / RowGroup, Q5_0: q50GroupBytes / RowGroup, Q8_0: q80GroupBytes / RowGroup, Q4_K: q4kGroupBytes / RowGroup, Q5_K: q5kColBytes / wideGroup, Q6_K: q6kColBytes / wideGroup}

// wideGroup is the number of rows the sixteen-row kernels (Q4_0, Q4_K, Q5_K, Q6_K)
// interleave: twice RowGroup, one row per 32-bit lane of a zmm register.
const wideGroup = 2 * RowGroup

// gemmR16Func multiplies a group of wideGroup repacked rows (nb block
// columns at w, see eachWideBlock) with na activation vectors at x, x+xstride,
// ... into out[ostride*a+r] (ostride >= 16: a scratch of sixteen floats
// per vector, or a row-major result with the matrix's row count between
// vectors; what lies between is not written). Q4_0's activations are
// q8sBlockBytes blocks, the K-quants' Q8_K blocks.
type gemmR16Func func(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int)

// gemmR16Kernels are the sixteen-row kernels (Q4_0, Q4_K, Q5_K and Q6_K
// with AVX-512 VNNI), filled by useSIMD like gemmR8Kernels. Their float
// contracts are their own (see gemmQ4_0R16Generic, gemmQ4KR16Generic,
// gemmQ5KR16Generic, gemmQ6KR16Generic): results do not
// depend on the batch, the thread count or the rows' grouping, but differ
// in the last bits from the single-row kernels on the file layout.
var gemmR16Kernels = map[Type]gemmR16Func{}

// r16Vectors is how many activation vectors MatMul hands a sixteen-row
// kernel per call: as many as it computes in one pass over the weights
// (the K-quants' kernels hold eight vectors' sums and accumulators
// in their 32 registers, Q4_0's four).
var r16Vectors = map[Type]int{Q4_0: 4, Q4_K: 8, Q5_K: 8, Q6_K: 8}

// gemmR8Kernels are the multi-row kernels of repacked types, filled by
// useSIMD where the CPU has them (amd64 with AVX-512 VNNI: Q5_0, Q8_0);
// written only during package init and by tests. Each result is bit-identical to the
// type's single-row kernel in dotKernels on the original layout. A matrix
// repacked while a kernel was present falls back to its original Data when
// tests switch the kernel off.
var gemmR8Kernels = map[Type]gemmR8Func{}

// Repack converts m's weights, where the CPU has a multi-row kernel for its
// type (Q4_0, Q5_0, Q8_0, Q4_K, Q5_K and Q6_K with AVX-512 VNNI), into the interleaved layout that
// kernel reads, in newly allocated memory, and reports whether it did.
// MatMul then reads the repacked copy and gives bit-identical results (the
// kernels keep the single-row kernel's float operations), except for
// Q4_0, Q4_K, Q5_K and Q6_K, whose sixteen-row kernels have contracts of
// their own (see gemmQ4_0R16Generic, gemmQ4KR16Generic,
// gemmQ5KR16Generic, gemmQ6KR16Generic) and whose rows need not be a
// multiple of RowGroup.
// m.Data is left
// as it was (it may alias a read-only mapping) but is no longer read by
// MatMul; a caller whose Data is mapped from a file can drop those pages
// (see model/engine). Rows must be a multiple of RowGroup but for the
// sixteen-row types.
//
// Repack must not run concurrently with a MatMul of m.
func (m *Matrix) Repack() bool { return m.RepackInto(func(n int) []byte { return make([]byte, n) }) }

// RepackInto is Repack with the memory of the copy from alloc, which must
// return n zeroed bytes (huge pages, say). alloc is called at most once,
// and only if m is repacked; the memory must outlive every use of m.
func (m *Matrix) RepackInto(alloc func(n int) []byte) bool {
	n, ok := m.RepackedSize()
	if !ok || m.packed != nil {
		return false
	}
	out := alloc(n)
	repackers[m.Type](m, out)
	m.packed = out
	return true
}

// RepackedSize is the size of the copy RepackInto makes of m, and false
// when it would not repack m (no multi-row kernel for its type on this
// CPU, or rows not a multiple of RowGroup).
func (m *Matrix) RepackedSize() (int, bool) {
	_, ok := repackers[m.Type]
	_, has := gemmR8Kernels[m.Type]
	_, has16 := gemmR16Kernels[m.Type]
	if !ok || !has && !has16 || m.Rows == 0 || m.Rows%RowGroup != 0 && !has16 {
		return 0, false
	}
	rowB, err := m.Type.RowBytes(m.Cols)
	if err != nil || len(m.Data) < rowB*m.Rows {
		return 0, false
	}
	rows := packedGroups(m.Rows) * RowGroup
	if has16 {
		rows = (m.Rows + wideGroup - 1) / wideGroup * wideGroup
	}
	return rows * m.Cols / m.Type.BlockSize() * repackedSize[m.Type], true
}

// UseRepacked makes MatMul read b, a copy that RepackInto made earlier of
// these same weights (kept in a file, say). It reports false and changes
// nothing when m would not be repacked or b is not the copy's size; the
// caller answers for b's content. Like Repack, it must not run
// concurrently with a MatMul of m.
func (m *Matrix) UseRepacked(b []byte) bool {
	n, ok := m.RepackedSize()
	if !ok || len(b) != n || m.packed != nil {
		return false
	}
	m.packed = b
	return true
}

// ReleaseData drops m's reference to Data once MatMul reads only the
// repacked copy (a repacked matrix always has a kernel that reads it), so
// that memory which held nothing but Data can be freed. It reports false,
// and changes nothing, when m is not repacked. Like Repack, it must not
// run concurrently with a MatMul of m.
func (m *Matrix) ReleaseData() bool {
	if m.packed == nil {
		return false
	}
	m.Data = nil
	return true
}

// packedGroups is the number of row groups of a repacked matrix of rows
// rows: a last group the rows do not fill (sixteen-row kernels only) is
// padded with zero rows, whose results MatMul drops (the sixteen-row
// layout pads to a multiple of wideGroup).
func packedGroups(rows int) int { return (rows + RowGroup - 1) / RowGroup }

// Repacked reports whether MatMul reads a repacked copy of m's weights.
func (m *Matrix) Repacked() bool { return m.packed != nil }

// eachBlock calls f(dst, src, r) for every block of m: src is row r (of 8)
// of a row group's block column, dst that column's group of groupB bytes
// in out (groups in row-group-major, then block-column order).
func eachBlock(m *Matrix, out []byte, groupB int, f func(dst, src []byte, r int)) {
	bb, nb := m.Type.BlockBytes(), m.Cols/m.Type.BlockSize()
	for g := 0; g < m.Rows/RowGroup; g++ {
		for b := 0; b < nb; b++ {
			dst := out[(g*nb+b)*groupB:][:groupB]
			for r := 0; r < RowGroup; r++ {
				f(dst, m.Data[((g*RowGroup+r)*nb+b)*bb:][:bb], r)
			}
		}
	}
}

// eachWideBlock calls f(dst, src, r) for every block of m in the layout
// of the sixteen-row kernels: rows in groups of wideGroup, each group's
// block columns in order, column b of group p the colB bytes from
// (p*nb+b)*colB, so a kernel reads its weights as one forward stream. src
// is row r (of 16) of the group's block b, dst that column; rows past the
// matrix's last (up to a multiple of sixteen) are left zero.
func eachWideBlock(m *Matrix, out []byte, colB int, f func(dst, src []byte, r int)) {
	bb, nb := m.Type.BlockBytes(), m.Cols/m.Type.BlockSize()
	for p := 0; p*wideGroup < m.Rows; p++ {
		for b := 0; b < nb; b++ {
			dst := out[(p*nb+b)*colB:][:colB]
			for r := 0; r < wideGroup && p*wideGroup+r < m.Rows; r++ {
				f(dst, m.Data[((p*wideGroup+r)*nb+b)*bb:][:bb], r)
			}
		}
	}
}

// repackQ4_0 lays Q4_0 rows out for the sixteen-row kernel
// (eachWideBlock). A column (q40ColBytes) holds the sixteen rows' f16
// scales d[0..15], then four 64-byte chunks; chunk k holds each row's qs
// bytes 4k..4k+3, row r at 4r. (A qs byte e holds element e in its low
// nibble and element 16+e in its high one.)
func repackQ4_0(m *Matrix, out []byte) {
	le := binary.LittleEndian
	eachWideBlock(m, out, q40ColBytes, func(dst, src []byte, r int) {
		le.PutUint16(dst[2*r:], le.Uint16(src))
		for k := 0; k < 4; k++ {
			le.PutUint32(dst[32+64*k+4*r:], le.Uint32(src[2+4*k:]))
		}
	})
}

// putNibbles ors row r's 16 bytes of Q4_0-style nibbles qs into the
// repacked nibble area q of a Q5_0 group (128 bytes): two 64-byte halves;
// in half h, byte e (0..31) holds element e of row 4h in its low nibble
// and of row 4h+2 in its high nibble, byte 32+e element e of rows 4h+1
// and 4h+3. Element e is the e-th of the block's 32 values (ggml: low
// nibbles are 0..15, high 16..31).
func putNibbles(q, qs []byte, r int) {
	le := binary.LittleEndian
	// Elements 0-15 are the low nibbles of qs, 16-31 the high ones;
	// eight at a time.
	q = q[64*(r/4)+32*(r%2):][:32]
	sh := 4 * ((r % 4) / 2)
	for i := 0; i < 16; i += 8 {
		v := le.Uint64(qs[i:])
		le.PutUint64(q[i:], le.Uint64(q[i:])|(v&0x0F0F0F0F0F0F0F0F)<<sh)
		le.PutUint64(q[16+i:], le.Uint64(q[16+i:])|(v>>4&0x0F0F0F0F0F0F0F0F)<<sh)
	}
}

// repackQ5_0 interleaves Q5_0 rows in groups of eight: per group and block
// column, the rows' f16 scales d[0..7], then the fifth bits of row pair p
// (rows 2p and 2p+1, the pairs the kernel holds in one register) as a
// uint64 at 16+8p, row 2p's 32 bits (the file's qh: bit e is element e's)
// low, then the low four bits of every element (putNibbles).
func repackQ5_0(m *Matrix, out []byte) {
	eachBlock(m, out, q50GroupBytes, func(dst, src []byte, r int) {
		copy(dst[2*r:], src[:2])
		copy(dst[16+4*r:][:4], src[2:6])
		putNibbles(dst[48:], src[6:22], r)
	})
}

// repackQ8_0 interleaves Q8_0 rows in groups of eight: per group and block
// column, the rows' f16 scales d[0..7], then for each row pair p 64 bytes:
// row 2p's 32 weights, row 2p+1's, each stored as w+128 (w XOR 0x80), so
// that the kernel multiplies them as unsigned bytes.
func repackQ8_0(m *Matrix, out []byte) {
	eachBlock(m, out, q80GroupBytes, func(dst, src []byte, r int) {
		copy(dst[2*r:], src[:2])
		q := dst[16+32*r:][:32]
		for i, v := range src[2:34] {
			q[i] = v ^ 0x80
		}
	})
}

// twinR8 is the skeleton of the generic twins: for every vector it runs
// block(grp, xb, lanes) over the nb block groups (groupB bytes) and
// activation blocks (xBlockB bytes), which adds one block's work to the
// eight float lanes of each row, then reduces the lanes in ggml's
// hsum_float_8 order into out[ostride*a+r].
func twinR8(nb int, w, x []byte, xstride, na int, out []float32, ostride, groupB, xBlockB int, block func(grp, xb []byte, lanes *[RowGroup][8]float32)) {
	for a := 0; a < na; a++ {
		xa := x[a*xstride:]
		var lanes [RowGroup][8]float32
		for b := 0; b < nb; b++ {
			block(w[b*groupB:][:groupB], xa[b*xBlockB:][:xBlockB], &lanes)
		}
		for r := 0; r < RowGroup; r++ {
			out[ostride*a+r] = hsum8(&lanes[r])
		}
	}
}

// twinQ8Blocks is the skeleton of the generic twins of the kernels whose
// activations are Q8_0 blocks (Q5_0, Q8_0): per row, block and
// vector it performs the AVX2 single-row kernel's float operations (eight
// int32 lanes of four products each, one fused multiply-add per lane with
// the float32 product d_w*d_x, ggml's hsum_float_8 order), so it is
// bit-identical to that kernel and to the assembly twin. Every group starts
// with the eight rows' f16 scales; elem(grp, r, e) is row r's weight e
// (signed) in the group. Tests compare the three; activations are
// quantised (|q| <= 127, as quantizeRowQ8_0 produces).
func twinQ8Blocks(nb int, w, x []byte, xstride, na int, out []float32, ostride, groupB int, elem func(grp []byte, r, e int) int32) {
	twinR8(nb, w, x, xstride, na, out, ostride, groupB, 34, func(grp, xb []byte, lanes *[RowGroup][8]float32) {
		dx := F16ToF32(binary.LittleEndian.Uint16(xb))
		for r := 0; r < RowGroup; r++ {
			d := F16ToF32(binary.LittleEndian.Uint16(grp[2*r:])) * dx
			for k := 0; k < 8; k++ {
				var s int32
				for e := 4 * k; e < 4*k+4; e++ {
					s += elem(grp, r, e) * int32(int8(xb[2+e]))
				}
				lanes[r][k] = fma32(float32(s), d, lanes[r][k])
			}
		}
	})
}

// q4Nibble is row r's element e of the repacked nibble area q (see
// putNibbles).
func q4Nibble(q []byte, r, e int) int32 {
	return int32(q[64*(r/4)+32*(r%2)+e] >> (4 * ((r % 4) / 2)) & 0x0F)
}

// gemmQ4_0R16Generic is the portable twin of the repacked Q4_0 kernel and
// defines its float contract: per row and vector, blocks in order,
// acc = fma(float32(isum), d_w*d_x, acc) with isum the block's exact
// integer sum of (q-8)*x and d_w*d_x rounded to float32; acc starts at 0
// and is the result, with no horizontal sum. So a row's result depends on
// nothing but its weights and the vector: not the batch, the thread count
// or which rows share a pass.
func gemmQ4_0R16Generic(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int) {
	le := binary.LittleEndian
	for a := 0; a < na; a++ {
		xa := x[a*xstride:]
		for r := 0; r < wideGroup; r++ {
			var acc float32
			for b := 0; b < nb; b++ {
				col, xb := w[b*q40ColBytes:][:q40ColBytes], xa[b*q8sBlockBytes:][:q8sBlockBytes]
				isum := int32(le.Uint32(xb))
				for e := 0; e < 16; e++ {
					q := col[32+64*(e/4)+4*r+e%4]
					isum += int32(q&0x0F)*int32(int8(xb[8+e])) + int32(q>>4)*int32(int8(xb[8+16+e]))
				}
				d := F16ToF32(le.Uint16(col[2*r:])) * math.Float32frombits(le.Uint32(xb[4:]))
				acc = fma32(float32(isum), d, acc)
			}
			out[ostride*a+r] = acc
		}
	}
}

// quantizeRowQ8_0Sums quantises x to Q8_0 (as quantizeRowQ8_0) into the
// repacked Q4_0 kernel's activation blocks (q8sBlockBytes each).
func quantizeRowQ8_0Sums(x []float32, dst []byte) {
	le := binary.LittleEndian
	for i := 0; i < len(x)/QK; i++ {
		b := dst[i*q8sBlockBytes:][:q8sBlockBytes]
		if quantQ8_0SumsBlock != nil && quantQ8_0SumsBlock(x[i*QK:(i+1)*QK], b) {
			continue
		}
		// A Q8_0 block in the last 34 bytes (f16 d at 6, q at 8), then
		// the sum and d as float32 over the first 8.
		quantizeRowQ8_0(x[i*QK:(i+1)*QK], b[6:])
		d := F16ToF32(le.Uint16(b[6:]))
		var sum int32
		for _, q := range b[8:] {
			sum += int32(int8(q))
		}
		le.PutUint32(b, uint32(-8*sum))
		le.PutUint32(b[4:], math.Float32bits(d))
	}
}

// gemmQ5_0R8Generic is the portable twin of the repacked Q5_0 kernel
// (elements q+16h-16, h the fifth bit).
func gemmQ5_0R8Generic(nb int, w, x []byte, xstride, na int, out []float32, ostride int) {
	twinQ8Blocks(nb, w, x, xstride, na, out, ostride, q50GroupBytes, func(grp []byte, r, e int) int32 {
		h := int32(binary.LittleEndian.Uint32(grp[16+4*r:]) >> e & 1)
		return q4Nibble(grp[48:], r, e) | h<<4 - 16
	})
}

// gemmQ8_0R8Generic is the portable twin of the repacked Q8_0 kernel
// (weights stored as w+128).
func gemmQ8_0R8Generic(nb int, w, x []byte, xstride, na int, out []float32, ostride int) {
	twinQ8Blocks(nb, w, x, xstride, na, out, ostride, q80GroupBytes, func(grp []byte, r, e int) int32 {
		return int32(int8(grp[16+32*r+e] ^ 0x80))
	})
}

// repackQ4K lays Q4_K rows out for the sixteen-row kernel
// (eachWideBlock). A column (one super-block of sixteen rows,
// q4kColBytes) holds d of rows 0-15 (f16), dmin of rows 0-15, then dword
// i (i = 0, 1, 2) of each row's 12 scale bytes at 64+64i+4r, then 32
// chunks of 64 bytes: chunk c holds each row's qs bytes 4c..4c+3 at
// 256+64c+4r. (In the file, qs byte 32j+e holds element e of sub-block 2j
// in its low nibble and of sub-block 2j+1 in its high one, so chunk 8j+k
// has elements 4k..4k+3 of sub-blocks 2j and 2j+1.)
func repackQ4K(m *Matrix, out []byte) {
	le := binary.LittleEndian
	eachWideBlock(m, out, q4kColBytes, func(dst, src []byte, r int) {
		putK4Head(dst, src, r)
		for c := 0; c < 32; c++ {
			le.PutUint32(dst[256+64*c+4*r:], le.Uint32(src[16+4*c:]))
		}
	})
}

// gemmQ4KR16Generic is the portable twin of the repacked Q4_K kernel and
// defines its float contract: per row and vector, super-blocks in order,
// acc = fma(-(dmin*d_x), float32(msum), acc), then acc = fma(float32(isum),
// d*d_x, acc), with the products rounded to float32, isum the super-block's
// exact integer sum over its sub-blocks s of sc_s * sum(q*x) and msum that
// of m_s * (the Q8_K bsums of s); acc starts at 0 and is the result, with
// no horizontal sum. So a row's result depends on nothing but its weights
// and the vector. Rows are laid out as repackQ4K says.
func gemmQ4KR16Generic(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int) {
	twinK4R16(nb, w, x, xstride, na, out, ostride, false)
}

// gemmQ5KR16Generic is the portable twin of the repacked Q5_K kernel and
// defines its float contract: gemmQ4KR16Generic's, with q the 5-bit
// values (the nibble and the fifth bit, bit s of the row's qh byte for
// sub-block s). Rows are laid out as repackQ5K says.
func gemmQ5KR16Generic(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int) {
	twinK4R16(nb, w, x, xstride, na, out, ostride, true)
}

// twinK4R16 is the twin of the repacked Q4_K (five false) or Q5_K
// (five true) kernel: see gemmQ4KR16Generic.
func twinK4R16(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int, five bool) {
	le := binary.LittleEndian
	colB, qs := q4kColBytes, func(c int) int { return 256 + 64*c }
	if five {
		colB, qs = q5kColBytes, q5kQsOff
	}
	twinR16(nb, w, x, xstride, na, out, ostride, colB, 292, func(grp, xb []byte, rr int, acc float32) float32 {
		dx := math.Float32frombits(le.Uint32(xb))
		var packed [12]byte
		for i := 0; i < 3; i++ {
			copy(packed[4*i:4*i+4], grp[64+64*i+4*rr:])
		}
		sc, mn := k4Scales(packed[:])
		var isum, msum int32
		for s := 0; s < 8; s++ {
			msum += int32(mn[s]) * (int32(int16(le.Uint16(xb[260+4*s:]))) + int32(int16(le.Uint16(xb[262+4*s:]))))
			var t int32
			for e := 0; e < 32; e++ {
				q := grp[qs(8*(s/2)+e/4)+4*rr+e%4] >> (4 * (s % 2)) & 0x0F
				if five {
					q |= grp[q5kQhOff(e/4)+4*rr+e%4] >> s & 1 << 4
				}
				t += int32(q) * int32(int8(xb[4+32*s+e]))
			}
			isum += int32(sc[s]) * t
		}
		d := F16ToF32(le.Uint16(grp[2*rr:])) * dx
		dm := F16ToF32(le.Uint16(grp[32+2*rr:])) * dx
		acc = fma32(-dm, float32(msum), acc)
		return fma32(float32(isum), d, acc)
	})
}

// putK4Head puts row r's d, dmin and 12 bytes of packed scales (the
// first 16 bytes of a Q4_K or Q5_K block, src) into a repacked column
// dst: d at 2r, dmin at 32+2r, scale dword i at 64+64i+4r.
func putK4Head(dst, src []byte, r int) {
	copy(dst[2*r:], src[0:2])
	copy(dst[32+2*r:], src[2:4])
	for i := 0; i < 3; i++ {
		copy(dst[64+64*i+4*r:][:4], src[4+4*i:])
	}
}

// repackQ5K lays Q5_K rows out for the sixteen-row kernel
// (eachWideBlock) as repackQ4K does Q4_K's (q5kColBytes = 16 × 176, no
// growth, 44 cache lines): d, dmin and the packed scales as in Q4_K's
// column, then eight 64-byte chunks of fifth bits (chunk k at
// q5kQhOff(k) holds each row's qh bytes 4k..4k+3, row r at 4r; bit s of
// qh byte e is element e's of sub-block s) and Q4_K's 32 chunks of
// nibbles (chunk c at q5kQsOff(c)).
func repackQ5K(m *Matrix, out []byte) {
	le := binary.LittleEndian
	eachWideBlock(m, out, q5kColBytes, func(dst, src []byte, r int) {
		putK4Head(dst, src, r)
		for k := 0; k < 8; k++ {
			le.PutUint32(dst[q5kQhOff(k)+4*r:], le.Uint32(src[16+4*k:]))
		}
		for c := 0; c < 32; c++ {
			le.PutUint32(dst[q5kQsOff(c)+4*r:], le.Uint32(src[48+4*c:]))
		}
	})
}

// twinR16 is the skeleton of the K-quant sixteen-row twins: for every
// vector and row it runs acc = block(col, xb, r, acc) over the nb block
// columns (colB bytes) and activation blocks (xBlockB bytes), acc
// starting at 0, and stores acc in out[ostride*a+r].
func twinR16(nb int, w, x []byte, xstride, na int, out []float32, ostride, colB, xBlockB int, block func(col, xb []byte, r int, acc float32) float32) {
	for a := 0; a < na; a++ {
		xa := x[a*xstride:]
		for r := 0; r < wideGroup; r++ {
			var acc float32
			for b := 0; b < nb; b++ {
				acc = block(w[b*colB:][:colB], xa[b*xBlockB:][:xBlockB], r, acc)
			}
			out[ostride*a+r] = acc
		}
	}
}

// repackQ6K lays Q6_K rows out for the sixteen-row kernel
// (eachWideBlock). A column (one super-block of sixteen rows,
// q6kColBytes) holds d of rows 0-15 (f16), then dword i (i = 0..3) of
// each row's sixteen int8 sub-block scales at 32+64i+4r, then sixteen
// triples of 64-byte chunks, triple t = 8n+k (n = 0, 1: the super-block's
// halves; k = 0..7) at 288+192t: the rows' ql bytes 64n+4k..+3, their ql
// bytes 64n+32+4k..+3 and their qh bytes 32n+4k..+3, row r at 4r in each,
// in the order the kernel reads them, so the column is one forward
// stream. (In the file, for l = 0..31, ql byte 64n+l holds element
// 128n+l in its low nibble and 128n+64+l in its high one, ql byte
// 64n+32+l elements 128n+32+l and 128n+96+l, and qh byte 32n+l the high
// two bits of those four, in bits 0-1, 2-3, 4-5 and 6-7.)
func repackQ6K(m *Matrix, out []byte) {
	le := binary.LittleEndian
	eachWideBlock(m, out, q6kColBytes, func(dst, src []byte, r int) {
		copy(dst[2*r:], src[208:210])
		for i := 0; i < 4; i++ {
			copy(dst[q6kScalesOff+64*i+4*r:][:4], src[192+4*i:])
		}
		for n := 0; n < 2; n++ {
			for k := 0; k < 8; k++ {
				t := dst[q6kQuantsOff+192*(8*n+k):]
				le.PutUint32(t[4*r:], le.Uint32(src[64*n+4*k:]))
				le.PutUint32(t[64+4*r:], le.Uint32(src[64*n+32+4*k:]))
				le.PutUint32(t[128+4*r:], le.Uint32(src[128+32*n+4*k:]))
			}
		}
	})
}

// q6kQuant is row r's element 128n+32j+4k+i (j, i = 0..3; k = 0..7) of
// a repacked Q6_K column as the unsigned 6-bit q (the weight is q-32).
func q6kQuant(col []byte, r, n, j, k, i int) int32 {
	t := col[q6kQuantsOff+192*(8*n+k):]
	lo := t[64*(j%2)+4*r+i] >> (4 * (j / 2)) & 0x0F
	hi := t[128+4*r+i] >> (2 * j) & 3
	return int32(lo | hi<<4)
}

// gemmQ6KR16Generic is the portable twin of the repacked Q6_K kernel and
// defines its float contract: per row and vector, super-blocks in order,
// acc = fma(float32(isum), d*d_x, acc), with d*d_x rounded to float32
// and isum the super-block's exact integer sum over its sixteen
// sub-blocks s of sc_s * (sum(q*x) - 32*bsum_s) (q the unsigned 6-bit
// values, bsum_s the Q8_K bsum of s: sum((q-32)*x) without a signed
// weight byte); acc starts at 0 and is the result, with no horizontal
// sum. So a row's result depends on nothing but its weights and the
// vector. Rows are laid out as repackQ6K says.
func gemmQ6KR16Generic(nb int, w []byte, x []byte, xstride, na int, out []float32, ostride int) {
	le := binary.LittleEndian
	twinR16(nb, w, x, xstride, na, out, ostride, q6kColBytes, 292, func(col, xb []byte, rr int, acc float32) float32 {
		var sums [16]int32
		for n := 0; n < 2; n++ {
			for j := 0; j < 4; j++ {
				for k := 0; k < 8; k++ {
					e := 128*n + 32*j + 4*k
					for i := 0; i < 4; i++ {
						sums[e/16] += q6kQuant(col, rr, n, j, k, i) * int32(int8(xb[4+e+i]))
					}
				}
			}
		}
		var isum int32
		for s, t := range sums {
			bsum := int32(int16(le.Uint16(xb[260+2*s:])))
			isum += int32(int8(col[q6kScalesOff+64*(s/4)+4*rr+s%4])) * (t - 32*bsum)
		}
		d := F16ToF32(le.Uint16(col[2*rr:])) * math.Float32frombits(le.Uint32(xb))
		return fma32(float32(isum), d, acc)
	})
}

// hsum8 adds eight lanes in ggml's hsum_float_8 order, as the kernels'
// HSUM8: ((x0+x4)+(x2+x6)) + ((x1+x5)+(x3+x7)).
func hsum8(v *[8]float32) float32 {
	s0, s1, s2, s3 := v[0]+v[4], v[1]+v[5], v[2]+v[6], v[3]+v[7]
	return (s0 + s2) + (s1 + s3)
}

// fma32 returns a*b+c rounded once to float32, as VFMADD231PS does. The
// product is exact in float64; the sum is rounded to odd in float64 (53
// bits, more than 24+2), which makes the final rounding to float32 correct.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return float32(s)
	}
	// TwoSum: e is the exact error of s.
	bv := s - p
	e := (p - (s - bv)) + (float64(c) - bv)
	if bits := math.Float64bits(s); e != 0 && bits&1 == 0 {
		if (e > 0) == (s > 0) {
			bits++
		} else {
			bits--
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}
