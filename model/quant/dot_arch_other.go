//go:build !amd64

package quant

var dotF32Impl = dotF32Generic
