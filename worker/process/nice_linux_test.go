package process

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// threadNices returns the nice value of every thread of pid
// (/proc/PID/task/TID/stat, field 19).
func threadNices(t *testing.T, pid int) []int {
	t.Helper()
	stats, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "stat"))
	require.NoError(t, err)
	var nices []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		// The command name (field 2) may hold spaces; fields after it follow ") ".
		rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		n, err := strconv.Atoi(rest[16]) // field 19 is the 17th after the name
		require.NoError(t, err)
		nices = append(nices, n)
	}
	return nices
}

// A worker spawned with Config.Nice runs, every thread of it, that many
// levels below this process; with 0 at this process's own.
func TestSpawnLowersPriority(t *testing.T) {
	own := threadNices(t, os.Getpid())[0]
	for _, tc := range []struct {
		name  string
		delta int
		want  int
	}{
		{"nice 3", 3, min(own+3, 19)},
		{"nice 0", 0, own},
		{"capped", 40, 19},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t, t.TempDir(), nil, func(c *Config) { c.Nice = tc.delta })
			stopAllAtEnd(t, m)
			w := spawn(t, m, "w-nice")
			nices := threadNices(t, w.PID)
			require.Greater(t, len(nices), 1, "a Go worker runs several threads")
			for _, n := range nices {
				assert.Equal(t, tc.want, n)
			}
		})
	}
}
