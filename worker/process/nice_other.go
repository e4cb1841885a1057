//go:build !linux

package process

// lowerPriority does nothing off Linux (Config.Nice is documented as
// Linux only).
func lowerPriority(pid, delta int) error { return nil }
