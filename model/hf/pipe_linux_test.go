//go:build linux

package hf

import (
	"bytes"
	"crypto/sha256"
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
	require.EqualValues(t, len(data), n, "what was written and hashed is still counted")
	require.NoError(t, w.Close())
	<-drained
}
