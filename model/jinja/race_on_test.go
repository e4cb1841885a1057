//go:build race

package jinja

// raceEnabled: the race detector slows the evaluator several times over.
const raceEnabled = true
