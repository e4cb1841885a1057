package quant_test

import (
	"fmt"

	"github.com/rbee-project/rbee/model/quant"
)

func ExampleMatMul() {
	// A 2×64 weight matrix in Q8_0 (two blocks per row) times one vector.
	const rows, cols = 2, 64
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(i%cols) / cols // row r: 0, 1/64, 2/64, ...
	}
	nb, _ := quant.Q8_0.RowBytes(cols)
	data := make([]byte, rows*nb)
	if err := quant.Quantize(quant.Q8_0, w, data); err != nil {
		panic(err)
	}
	x := make([]float32, cols)
	for i := range x {
		x[i] = 1
	}
	pool := quant.NewPool(2)
	defer pool.Close()
	dst := make([]float32, rows)
	quant.MatMul(pool, dst, &quant.Matrix{Type: quant.Q8_0, Rows: rows, Cols: cols, Data: data}, x, 1)
	fmt.Printf("%.1f %.1f (exact 31.5; Q8_0 weights and activations)\n", dst[0], dst[1])
	// Output: 31.6 31.6 (exact 31.5; Q8_0 weights and activations)
}

func ExampleDequantize() {
	src := []float32{0.5, -1, 2, 0}
	half := make([]byte, 2*len(src))
	_ = quant.Quantize(quant.F16, src, half)
	out := make([]float32, len(src))
	_ = quant.Dequantize(quant.F16, half, out)
	fmt.Println(out)
	// Output: [0.5 -1 2 0]
}
