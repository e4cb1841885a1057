package builtin

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
)

// residentPages counts the pages wholly inside b that are present in
// this process's page tables (/proc/self/pagemap, bit 63), and how many
// there are.
func residentPages(t *testing.T, b []byte) (present, pages int) {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no page map to read: %v", err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	start := reflect.ValueOf(b).Pointer()
	first, last := (start+page-1)/page, (start+uintptr(len(b)))/page
	entries := make([]byte, 8*(last-first))
	_, err = f.ReadAt(entries, int64(first*8))
	require.NoError(t, err)
	for i := 0; i < len(entries); i += 8 {
		if binary.LittleEndian.Uint64(entries[i:])>>63 == 1 {
			present++
		}
	}
	return present, int(last - first)
}

// A reader's Close hands the model's pages back: after a whole read they
// are resident, after Close none is, and the bytes read again are the
// same (the kernel faults them in from the executable).
func TestCloseReleasesPages(t *testing.T) {
	r, _, sum, err := Open("stories260k")
	require.NoError(t, err)
	_, err = io.Copy(sha256.New(), r) // reads every byte (io.Discard would not)
	require.NoError(t, err)
	present, pages := residentPages(t, stories260K)
	require.Greater(t, pages, 200, "the model spans %d pages", pages)
	require.Equal(t, pages, present, "read whole, every page is resident")

	require.NoError(t, r.Close())
	present, _ = residentPages(t, stories260K)
	require.Zero(t, present, "pages left resident after Close")

	r2, _, _, err := Open("stories260k")
	require.NoError(t, err)
	defer r2.Close()
	h := sha256.New()
	_, err = io.Copy(h, r2)
	require.NoError(t, err)
	require.Equal(t, sum, hex.EncodeToString(h.Sum(nil)), "the bytes after a release")
}

// Memory that is not a file's is never released: MADV_DONTNEED would zero
// it (an executable a packer unpacked into anonymous memory holds its
// embedded data there).
func TestReleaseKeepsAnonymousMemory(t *testing.T) {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i%251) + 1
	}
	release(b)
	for i := range b {
		if b[i] != byte(i%251)+1 {
			t.Fatalf("byte %d changed to %d", i, b[i])
		}
	}
	start := reflect.ValueOf(stories260K).Pointer()
	require.True(t, fileMapped(start, start+1), "the embedded model is in the executable's mapping")
	heap := reflect.ValueOf(b).Pointer()
	require.False(t, fileMapped(heap, heap+1))
}
