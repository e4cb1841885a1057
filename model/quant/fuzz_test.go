package quant

import (
	"math"
	"testing"
)

// fuzzTypes are the types whose dequantiser and dot kernels get untrusted
// bytes (tensor data from arbitrary GGUF files).
var fuzzTypes = append([]Type{F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS}, iqDotTypes...)

// FuzzDequantize feeds arbitrary block bytes to Dequantize and to the
// generic and SIMD dot kernels: nothing may panic, and where the exact
// result is finite and moderate the two kernels must agree.
func FuzzDequantize(f *testing.F) {
	f.Add(uint8(6), []byte{0x00, 0x3c, 1, 2, 3, 0x80, 0x7f})
	f.Add(uint8(10), make([]byte, 300))
	f.Add(uint8(12), []byte("\xff\x7b\xff\x7b some bytes of a q6_K block and more and more"))
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		typ := fuzzTypes[int(sel)%len(fuzzTypes)]
		bs, bb := typ.BlockSize(), typ.BlockBytes()
		nb := len(data) / bb
		if typ == F16 || typ == BF16 {
			nb = min(nb, 512)
		}
		if nb == 0 {
			return
		}
		cols := nb * bs
		w := data[:nb*bb]
		deq := make([]float32, cols)
		if err := Dequantize(typ, w, deq); err != nil {
			t.Fatal(err)
		}
		x := make([]float32, cols)
		for i := range x {
			x[i] = float32(math.Sin(float64(i)*0.37)) * 2
		}
		vt := vecDotType(typ)
		xb, _ := vt.RowBytes(cols)
		xq := make([]byte, xb)
		quantizeActivations(vt, x, xq)
		xd := make([]float32, cols)
		if err := Dequantize(vt, xq, xd); err != nil {
			t.Fatal(err)
		}
		var want, mag float64
		for i := range deq {
			p := float64(deq[i]) * float64(xd[i])
			want += p
			mag += math.Abs(p)
		}
		gen := genericKernels[typ](cols, w, xq)
		simd := dotKernels[typ](cols, w, xq)
		if math.IsNaN(mag) || math.IsInf(mag, 0) || mag > 1e30 {
			return
		}
		// The kernels must agree closely; against the float64 dot of the
		// dequantised values they may differ more, since Q8_1's block sum s
		// is stored as f16 (as in ggml).
		tol := 1e-4*mag + 1e-3
		if math.Abs(float64(gen)-float64(simd)) > tol || math.Abs(float64(gen)-want) > 100*tol {
			t.Fatalf("%s cols %d: generic %v simd %v want %v (tolerance %v)", typ, cols, gen, simd, want, tol)
		}
	})
}
