//go:build !amd64 || purego

package quant

func mulMaxSIMD(x []float32, s float32) (float32, int) { return negInf32, 0 }

func addSIMD(x []float32, c float32) int { return 0 }

func mulSIMD(x []float32, c float32) int { return 0 }
