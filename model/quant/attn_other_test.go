//go:build !amd64 || purego

package quant

// attnPath: only the generic attention kernels exist here ("generic";
// "default" restores what init chose).
func attnPath(path string) bool {
	switch path {
	case "generic":
		useSIMD(false)
		return true
	case "default":
		useSIMD(true)
		return true
	}
	return false
}
