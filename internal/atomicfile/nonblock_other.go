//go:build !unix

package atomicfile

const openNonblock = 0
