//go:build arm64 && !purego

package quant

import "testing"

// TestARMv80Kernels runs the SIMD comparisons with the ARMv8.0 twins of the
// SDOT kernels (what Cortex-A53/A72 cores run).
func TestARMv80Kernels(t *testing.T) {
	saved := armDotProd
	armDotProd = false
	useSIMD(true)
	defer func() {
		armDotProd = saved
		useSIMD(true)
	}()
	t.Run("SIMDMatchesGeneric", TestSIMDMatchesGeneric)
	t.Run("MatMulMatchesDequantizedDot", TestMatMulMatchesDequantizedDot)
}
