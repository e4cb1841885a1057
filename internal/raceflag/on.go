//go:build race

// Package raceflag says whether the binary was built with the race
// detector, for tests whose figures it changes (it slows code several
// times over, and sync.Pool drops a quarter of what is put in it).
package raceflag

// Enabled: built with -race.
const Enabled = true
