//go:build !(amd64 || arm64) || purego

package quant

var dotF32Impl = dotF32Generic

// useSIMD reports false: there are no assembly kernels for this build.
func useSIMD(on bool) bool { return !on }

func hasSIMDKernel(Type) bool { return false }
