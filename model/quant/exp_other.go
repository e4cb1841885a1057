//go:build !amd64 || purego

package quant

// expVector is false: there is no vector exp kernel for this build.
const expVector = false

func expF32sSIMD(dst, src []float32) { expF32sGeneric(dst, src) }

// setExpWide reports that only the generic path runs here.
func setExpWide(on bool) bool { return !on }
