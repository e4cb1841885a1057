//go:build linux

package hf

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// feed hands data to p in copyBuffer-sized buffers and closes it.
func feed(t *testing.T, p *pipe, data []byte) (int64, error) {
	t.Helper()
	for len(data) > 0 {
		b := p.get()
		if b == nil {
			break
		}
		k := copy(b, data)
		data = data[k:]
		if len(data) == 0 {
			return p.close(b[:k])
		}
		p.toWrite <- b[:k]
	}
	return p.close(nil)
}

func TestPipeFlushesWhileCopying(t *testing.T) {
	data := make([]byte, 5*copyBuffer+123)
	for i := range data {
		data[i] = byte(i * 31)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "part"))
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	// A flush after every buffer: the flusher runs beside the writer
	// many times and the result is still the bytes and their hash.
	n, err := feed(t, newPipeFlushing(f, h, 0, copyBuffer), data)
	require.NoError(t, err)
	require.EqualValues(t, len(data), n)
	want := sha256.Sum256(data)
	require.Equal(t, want[:], h.Sum(nil))
	got, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
}

func TestPipeFailsWhenAFlushFails(t *testing.T) {
	// A pipe's write end takes writes but refuses fdatasync (EINVAL):
	// the copy must fail even though every write succeeded.
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	drained := make(chan struct{})
	go func() { defer close(drained); _, _ = io.Copy(io.Discard, r) }()
	data := make([]byte, 3*copyBuffer)
	n, err := feed(t, newPipeFlushing(w, sha256.New(), 0, copyBuffer), data)
	require.ErrorContains(t, err, "flushing")
	// The file is cut back to what a flush covered (none here), and a
	// pipe cannot be: nothing is counted as kept.
	require.ErrorContains(t, err, "cutting the partial back to 0 bytes")
	require.Zero(t, n)
	require.NoError(t, w.Close())
	<-drained
}

// TestPipeCutsBackToTheLastGoodFlush: after a flush fails, the copy stops
// and the partial is cut back to what the last good flush covered, which
// the count then says, so a resume starts from bytes known to be on disk.
func TestPipeCutsBackToTheLastGoodFlush(t *testing.T) {
	data := make([]byte, 16*copyBuffer)
	for i := range data {
		data[i] = byte(i * 13)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "part"))
	require.NoError(t, err)
	defer f.Close()
	const start = 1000 // bytes an earlier attempt left
	require.NoError(t, f.Truncate(start))
	_, err = f.Seek(start, io.SeekStart)
	require.NoError(t, err)
	p := newPipeFlushing(f, sha256.New(), start, copyBuffer)
	flushes := 0
	p.sync = func(f *os.File) error {
		if flushes++; flushes == 2 {
			return errors.New("EIO")
		}
		return flushData(f)
	}
	n, err := feed(t, p, data)
	require.ErrorContains(t, err, "EIO")
	require.ErrorContains(t, err, "cut back")
	require.Positive(t, n, "the first flush covered at least one buffer")
	require.Less(t, n, int64(len(data)), "the copy stopped")
	st, err := f.Stat()
	require.NoError(t, err)
	require.Equal(t, start+n, st.Size())
	got := make([]byte, n)
	_, err = f.ReadAt(got, start)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data[:n], got))
}
