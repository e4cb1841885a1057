//go:build !linux

package engineguard

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; elsewhere a killed
// guard leaves the engine running (the node's process table still knows it).
func dieWithParent(*exec.Cmd) {}
