//go:build !linux

package hugepage

func advise([]byte) error { return nil }

func unavailable() string { return "transparent huge pages are Linux only" }
