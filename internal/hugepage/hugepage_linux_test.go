package hugepage

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// mapSize holds seven whole huge pages wherever an anonymous mapping
// starts (the kernel aligns a file's large mapping itself).
const mapSize = 16 << 20

// mappingKB sums field (e.g. "AnonHugePages") over the mappings of
// /proc/self/smaps that overlap b.
func mappingKB(t *testing.T, b []byte, field string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	hi := lo + uintptr(len(b))
	in, kb := false, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var a, z uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &a, &z); n == 2 && strings.Contains(line, "-") {
			in = a < hi && z > lo
			continue
		}
		var v int
		if in && strings.HasPrefix(line, field+":") {
			_, err := fmt.Sscanf(strings.TrimPrefix(line, field+":"), "%d kB", &v)
			require.NoError(t, err)
			kb += v
		}
	}
	require.NoError(t, sc.Err())
	return kb
}

// thpOff says why transparent huge pages cannot be tested here, or "".
func thpOff() string {
	if why := Unavailable(); why != "" {
		return why
	}
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return err.Error()
	}
	if strings.Contains(string(b), "[never]") {
		return "transparent huge pages are off (never)"
	}
	return ""
}

// requireHuge fails unless kb (kB in huge pages) is positive, but skips
// where the kernel had no free 2 MiB block to give (memory too
// fragmented: it then falls back to base pages, as it may).
func requireHuge(t *testing.T, kb int, what string) {
	t.Helper()
	if kb > 0 {
		return
	}
	b, err := os.ReadFile("/proc/buddyinfo")
	require.NoError(t, err)
	free := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// "Node 0, zone Normal c0 c1 ... c10": counts of free blocks
		// of order 0.. (order 9 is 2 MiB with 4 KiB pages).
		for order := 9; len(f) > 4 && 4+order < len(f); order++ {
			n, err := strconv.Atoi(f[4+order])
			require.NoError(t, err)
			free += n
		}
	}
	if free == 0 {
		t.Skipf("%s: no huge page, and no free 2 MiB block for one (memory fragmented)", what)
	}
	require.Positive(t, kb, "%s: in huge pages (%d free 2 MiB blocks)", what, free)
}

func touch(b []byte) (sum byte) {
	for i := 0; i < len(b); i += 4096 {
		sum += b[i]
	}
	return sum
}

// TestAdviseAnonymous: advised anonymous memory is backed by huge pages
// where they are "madvise" or "always".
func TestAdviseAnonymous(t *testing.T) {
	if why := thpOff(); why != "" {
		t.Skip(why)
	}
	b, err := unix.Mmap(-1, 0, mapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	require.NoError(t, err)
	defer unix.Munmap(b)
	require.NoError(t, Advise(b))
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	requireHuge(t, mappingKB(t, b, "AnonHugePages"), "advised anonymous memory")
	require.NoError(t, Advise(nil))
}

// largeFolioFS says whether dir's file system keeps large folios in the
// page cache on this kernel (XFS since 5.18, ext4 since 6.16), or why not.
func largeFolioFS(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err.Error()
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err.Error()
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	kernel := major*100 + minor
	switch st.Type {
	case unix.XFS_SUPER_MAGIC:
		if kernel >= 518 {
			return ""
		}
	case unix.EXT4_SUPER_MAGIC:
		if kernel >= 616 {
			return ""
		}
	}
	return fmt.Sprintf("file system 0x%x on Linux %d.%d keeps no large folios", st.Type, major, minor)
}

// TestAdviseFile: a file written through an advised shared mapping (as
// the engine's repack cache is) is mapped in huge pages, there and in a
// later read-only mapping (as another worker maps it); so is a file read
// fresh through an advised mapping (as the engine maps a model).
func TestAdviseFile(t *testing.T) {
	if why := thpOff(); why != "" {
		t.Skip(why)
	}
	dir := t.TempDir()
	if why := largeFolioFS(dir); why != "" {
		t.Skip(why)
	}
	name := filepath.Join(dir, "weights")
	f, err := os.Create(name)
	require.NoError(t, err)
	require.NoError(t, unix.Fallocate(int(f.Fd()), 0, 0, mapSize))
	w, err := unix.Mmap(int(f.Fd()), 0, mapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	require.NoError(t, Advise(w))
	for i := range w {
		w[i] = byte(i * 7)
	}
	requireHuge(t, mappingKB(t, w, "FilePmdMapped"), "the writer's own mapping")
	require.NoError(t, unix.Msync(w, unix.MS_SYNC))
	require.NoError(t, unix.Munmap(w))
	require.NoError(t, f.Close())

	read := func(advise bool) int {
		f, err := os.Open(name)
		require.NoError(t, err)
		defer f.Close()
		r, err := unix.Mmap(int(f.Fd()), 0, mapSize, unix.PROT_READ, unix.MAP_SHARED)
		require.NoError(t, err)
		defer unix.Munmap(r)
		if advise {
			require.NoError(t, Advise(r))
		}
		i := 4097
		require.Equal(t, byte(i*7), r[i]) // the bytes written
		touch(r)
		return mappingKB(t, r, "FilePmdMapped")
	}
	requireHuge(t, read(true), "a later reader's mapping")

	// Out of the page cache, then read through an advised mapping.
	f, err = os.Open(name)
	require.NoError(t, err)
	require.NoError(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	require.NoError(t, f.Close())
	requireHuge(t, read(true), "a fresh read through an advised mapping")
}
