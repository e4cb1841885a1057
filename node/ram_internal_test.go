package node

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/worker/process"
)

func TestRAMUse(t *testing.T) {
	const mib = 1 << 20
	w := func(model string, weights, rest uint64) process.WorkerInfo {
		return process.WorkerInfo{WorkerID: "w-" + model, ModelPath: model, RAM: process.RAM{Weights: weights, Rest: rest}}
	}
	cases := []struct {
		name             string
		infos            []process.WorkerInfo
		claims           map[int]ramClaim
		running, claimed uint64
	}{
		{"nothing", nil, nil, 0, 0},
		{"one worker", []process.WorkerInfo{w("a", 100*mib, 10*mib)}, nil, 110 * mib, 0},
		{"two workers of one file map it once", []process.WorkerInfo{w("a", 100*mib, 10*mib), w("a", 100*mib, 20*mib)}, nil, 130 * mib, 0},
		{"a shard's part and the whole file: the larger", []process.WorkerInfo{w("a", 40*mib, 5*mib), w("a", 100*mib, 10*mib)}, nil, 115 * mib, 0},
		{"two files", []process.WorkerInfo{w("a", 100*mib, 10*mib), w("b", 50*mib, 5*mib)}, nil, 165 * mib, 0},
		{"a GPU worker (no RAM recorded)", []process.WorkerInfo{w("a", 0, 0)}, nil, 0, 0},
		{"a claim of a file in use adds its rest", []process.WorkerInfo{w("a", 100*mib, 10*mib)},
			map[int]ramClaim{1: {model: "a", ram: process.RAM{Weights: 100 * mib, Rest: 10 * mib}}}, 110 * mib, 10 * mib},
		{"a claim whose worker has started counts once, as the worker", []process.WorkerInfo{w("b", 50*mib, 5*mib)},
			map[int]ramClaim{1: {worker: "w-b", model: "b", ram: process.RAM{Weights: 50 * mib, Rest: 5 * mib}}}, 55 * mib, 0},
		{"claims of one new file map it once", nil,
			map[int]ramClaim{1: {model: "b", ram: process.RAM{Weights: 50 * mib, Rest: 5 * mib}}, 2: {model: "b", ram: process.RAM{Weights: 50 * mib, Rest: 5 * mib}}},
			0, 60 * mib},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			running, claimed, _ := ramUse(tc.infos, tc.claims)
			require.Equal(t, tc.running, running)
			require.Equal(t, tc.claimed, claimed)
		})
	}
}

func TestFreeRAM(t *testing.T) {
	const gib = 1 << 30
	cases := []struct {
		name                                     string
		total, available, limit, running, claims uint64
		free                                     uint64
		known                                    bool
	}{
		{"nothing known", 0, 0, 0, 0, 0, 0, false},
		{"the OS's figure", 16 * gib, 10 * gib, 0, 0, 0, 10 * gib, true},
		{"claims are not in the OS's figure yet", 16 * gib, 10 * gib, 0, 0, 3 * gib, 7 * gib, true},
		{"mapped workers hide in the cache: the total counts them", 16 * gib, 15 * gib, 0, 12 * gib, 0, 4 * gib, true},
		{"the limit caps", 16 * gib, 10 * gib, 4 * gib, 0, 0, 4 * gib, true},
		{"the limit less the workers", 16 * gib, 10 * gib, 4 * gib, 3 * gib, 0, 1 * gib, true},
		{"the limit less workers and claims, to zero", 16 * gib, 10 * gib, 4 * gib, 3 * gib, 2 * gib, 0, true},
		{"only a limit known", 0, 0, 4 * gib, 1 * gib, 0, 3 * gib, true},
		{"the OS has less than the limit", 16 * gib, 2 * gib, 4 * gib, 0, 0, 2 * gib, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			free, known := freeRAM(tc.total, tc.available, tc.limit, tc.running, tc.claims)
			require.Equal(t, tc.known, known)
			if known {
				require.Equal(t, tc.free, free)
			}
		})
	}
}
