//go:build unix

package quant

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// mappedThenTruncated returns a read-only shared mapping of a file of size
// bytes that has since been truncated to 0: reading it faults (SIGBUS).
func mappedThenTruncated(t *testing.T, size int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "w")
	require.NoError(t, os.WriteFile(path, make([]byte, size), 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	t.Cleanup(func() { _ = unix.Munmap(data) })
	require.NoError(t, os.Truncate(path, 0))
	return data
}

// caught runs f and returns what it panicked with (nil: it returned).
func caught(f func()) (r any) {
	defer func() { r = recover() }()
	f()
	return nil
}

// TestPoolFault: a fault in a Pool's job (weights in a mapped file that was
// truncated) killed the process with "fatal error: fault" wherever it
// happened. The Pool turns it into a panic on the caller, with the fault
// (IsFault), after all workers are done, whichever worker met it; the Pool
// then runs the next job as usual.
func TestPoolFault(t *testing.T) {
	const rows, cols = 64, 256
	bad := mappedThenTruncated(t, rows*cols*4)
	p := NewPool(3)
	defer p.Close()
	var sink [3]byte // the reads must happen
	cases := []struct {
		name string
		job  func()
	}{
		{"caller's share", func() {
			p.Run(3, func(w, s, e int) {
				if w == 0 {
					sink[w] = bad[s]
				}
			})
		}},
		{"one worker's share", func() {
			p.Run(3, func(w, s, e int) {
				if w == 2 {
					sink[w] = bad[s]
				}
			})
		}},
		{"every share", func() { p.Run(rows, func(w, s, e int) { sink[w] = bad[s*4096%len(bad)] }) }},
		{"MatMul", func() {
			MatMul(p, make([]float32, rows), &Matrix{Type: F32, Rows: rows, Cols: cols, Data: bad}, make([]float32, cols), 1)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := caught(c.job)
			require.NotNil(t, r)
			require.True(t, IsFault(r), "%v", r)
			// The Pool still works.
			n := 0
			p.Run(3, func(w, s, e int) {
				if w == 0 {
					n = e - s
				}
			})
			require.Equal(t, 1, n)
		})
	}
	require.False(t, IsFault("not a runtime error"))
}
