package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

func hostCmd(t testing.TB, name string, port int) []byte {
	return enc(t, UpsertHost{Host: Host{Name: name, Host: "10.0.0.1", Port: port, State: HostKnown, UpdatedAt: t0}})
}

func envelope(t testing.TB, id byte, base uint64, cmd []byte) []byte {
	t.Helper()
	b, err := EncodeOnce(OnceID{id}, base, cmd)
	require.NoError(t, err)
	return b
}

// applyAt applies data at index and returns the Result or the error.
func applyAt(f *FSM, index uint64, data []byte) (Result, error) {
	res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	if err, ok := res.(error); ok {
		return Result{}, err
	}
	return res.(Result), nil
}

func port(t *testing.T, f *FSM, name string) int {
	t.Helper()
	h, ok := f.Host(name)
	require.True(t, ok, "host %s", name)
	return h.Port
}

// A retry of a committed request, after another writer's write, returns
// the first Result and leaves the other write in place.
func TestOnceAppliesARequestOnce(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: Version})
	first, err := applyAt(f, 2, envelope(t, 1, 1, hostCmd(t, "h", 1)))
	require.NoError(t, err)
	require.Equal(t, Result{Index: 2, Type: TypeUpsertHost, Changed: true}, first)
	_, err = applyAt(f, 3, hostCmd(t, "h", 2)) // another writer
	require.NoError(t, err)

	events, stop := f.Subscribe()
	defer stop()
	retry, err := applyAt(f, 4, envelope(t, 1, 1, hostCmd(t, "h", 1)))
	require.NoError(t, err)
	require.Equal(t, first, retry, "the retry answers with the first attempt's Result")
	require.Equal(t, 2, port(t, f, "h"), "the retry did not apply again")
	require.Equal(t, uint64(3), f.Index(), "a duplicate changes nothing")
	require.Empty(t, events, "a duplicate is no change")

	// Another request with the same command is a new write.
	res, err := applyAt(f, 5, envelope(t, 2, 4, hostCmd(t, "h", 1)))
	require.NoError(t, err)
	require.Equal(t, uint64(5), res.Index)
	require.Equal(t, 1, port(t, f, "h"))
	require.Equal(t, 2, f.State().OnceRecords())
}

// A rejected command is not remembered: it changed nothing, and its retry
// is applied as a first attempt.
func TestOnceForgetsRejections(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: Version})
	del := enc(t, SetNodeState{ID: "peerA", State: NodeAlive, At: t0})
	_, err := applyAt(f, 2, envelope(t, 7, 1, del))
	require.ErrorIs(t, err, ErrNotFound)
	require.Zero(t, f.State().OnceRecords())
	applyAll(t, f, UpsertNode{Node: sampleNode("peerA", "a")})
	res, err := applyAt(f, 4, envelope(t, 7, 1, del))
	require.NoError(t, err)
	require.Equal(t, uint64(4), res.Index)
}

// Records are dropped OnceWindow indexes after their entry; an envelope
// whose record may be gone is refused, one whose record is there is not.
func TestOnceWindow(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: Version})
	_, err := applyAt(f, 10, envelope(t, 1, 9, hostCmd(t, "h", 1)))
	require.NoError(t, err)

	// At the edge of the window the record is still there.
	last := uint64(10 + OnceWindow - 1)
	res, err := applyAt(f, last, envelope(t, 1, 9, hostCmd(t, "h", 1)))
	require.NoError(t, err)
	require.Equal(t, uint64(10), res.Index)

	// An unknown request whose Base is too old: refused, nothing changes.
	before := f.State()
	_, err = applyAt(f, 20+OnceWindow, envelope(t, 2, 19, hostCmd(t, "h", 2)))
	require.ErrorIs(t, err, ErrExpired)
	require.Equal(t, "expired", ErrorCode(err))
	require.Same(t, before, f.State())
	// With a recent Base it applies, and drops the record of index 10.
	_, err = applyAt(f, 20+OnceWindow, envelope(t, 2, 20, hostCmd(t, "h", 2)))
	require.NoError(t, err)
	require.Equal(t, 1, f.State().OnceRecords())
	_, err = applyAt(f, 21+OnceWindow, envelope(t, 1, 9, hostCmd(t, "h", 1)))
	require.ErrorIs(t, err, ErrExpired, "its record is gone: the registry cannot tell")
	require.Equal(t, 2, port(t, f, "h"))

	// Records never exceed the window, however many requests.
	g := New(nil)
	applyAll(t, g, SetRegistryVersion{Version: Version})
	for i := uint64(2); i < 2+OnceWindow+100; i++ {
		var id OnceID
		binary.BigEndian.PutUint64(id[:], i)
		data, err := EncodeOnce(id, i-1, hostCmd(t, "h", int(i%60000)+1))
		require.NoError(t, err)
		_, err = applyAt(g, i, data)
		require.NoError(t, err)
	}
	require.Equal(t, OnceWindow, g.State().OnceRecords())
}

// Records survive a snapshot: a replica restored from one deduplicates
// like the one that wrote it, and the bytes are stable.
func TestOnceSnapshot(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: Version})
	for i := range 5 {
		_, err := applyAt(f, uint64(2+i), envelope(t, byte(i+1), 1, hostCmd(t, "h", i+1)))
		require.NoError(t, err)
	}
	snap := snapshotOf(t, f)
	g := New(nil)
	require.NoError(t, g.Restore(nopCloser{bytes.NewReader(snap)}))
	require.Equal(t, 5, g.State().OnceRecords())
	require.Equal(t, snap, snapshotOf(t, g))
	for _, r := range []*FSM{f, g} {
		res, err := applyAt(r, 7, envelope(t, 3, 1, hostCmd(t, "h", 3)))
		require.NoError(t, err)
		require.Equal(t, uint64(4), res.Index)
		require.Equal(t, 5, port(t, r, "h"))
	}

	// A snapshot taken before later envelopes keeps its records as they
	// were (the states share one array).
	s, err := f.Snapshot()
	require.NoError(t, err)
	for i := range 3 {
		_, err := applyAt(f, uint64(8+i), envelope(t, byte(10+i), 7, hostCmd(t, "h", 10+i)))
		require.NoError(t, err)
	}
	var buf bytes.Buffer
	require.NoError(t, writeSnapshot(&buf, s.(*snapshot).state, s.(*snapshot).format))
	require.Equal(t, snap, buf.Bytes())

	// Bad records are refused.
	const a, b = `{"id":"01000000000000000000000000000000","index":2,"type":12}`, `{"id":"02000000000000000000000000000000","index":3,"type":12}`
	for _, tc := range []struct {
		name    string
		version int
		recs    []string
		ok      bool
	}{
		{"two records", Version, []string{a, b}, true},
		{"a newer build's type", Version, []string{`{"id":"01000000000000000000000000000000","index":2,"type":99}`}, true},
		{"bad id", Version, []string{`{"id":"zz","index":2,"type":12}`}, false},
		{"short id", Version, []string{`{"id":"0102","index":2,"type":12}`}, false},
		{"envelope", Version, []string{`{"id":"01000000000000000000000000000000","index":2,"type":20}`}, false},
		{"type 0", Version, []string{`{"id":"01000000000000000000000000000000","index":2,"type":0}`}, false},
		{"future index", Version, []string{`{"id":"01000000000000000000000000000000","index":99,"type":12}`}, false},
		{"out of order", Version, []string{b, a}, false},
		{"twice", Version, []string{a, `{"id":"01000000000000000000000000000000","index":3,"type":12}`}, false},
		{"below version 4", 3, []string{a}, false},
	} {
		var buf bytes.Buffer
		buf.WriteString("RBEE\x04")
		rw := recordWriter{w: bufio.NewWriter(&buf)}
		rw.put(recHeader, snapshotHeader{Index: 6, RegistryVersion: tc.version})
		for _, r := range tc.recs {
			rw.frame(recOnce, []byte(r))
		}
		rw.end()
		require.NoError(t, rw.w.Flush())
		st, err := ReadSnapshot(&buf)
		if tc.ok {
			require.NoError(t, err, tc.name)
			require.Equal(t, len(tc.recs), st.OnceRecords())
		} else {
			require.ErrorIs(t, err, ErrMalformed, tc.name)
		}
	}
}

// An envelope whose Base is not below its own index is invalid.
func TestOnceBaseBelowIndex(t *testing.T) {
	f := New(nil)
	applyAll(t, f, SetRegistryVersion{Version: Version})
	_, err := applyAt(f, 5, envelope(t, 1, 5, hostCmd(t, "h", 1)))
	require.ErrorIs(t, err, ErrInvalid)
	_, err = applyAt(f, 5, envelope(t, 1, 4, hostCmd(t, "h", 1)))
	require.NoError(t, err)
}

// A build below version 4 halts on an envelope instead of applying it
// without its record; a proposer never writes one below version 4.
func TestOnceNeedsVersion(t *testing.T) {
	data := envelope(t, 1, 0, hostCmd(t, "h", 1))
	require.ErrorIs(t, CheckWritable(data, 3), ErrNeedsVersion)
	require.NoError(t, CheckWritable(data, OnceVersion))
	inner := envelope(t, 1, 0, enc(t, UpsertGroup{Group: sampleGroup("g-1")}))
	require.NoError(t, CheckWritable(inner, OnceVersion))

	old := New(nil, WithSupportedVersion(3))
	_, err := applyAt(old, 1, data)
	require.ErrorIs(t, err, ErrHalted)

	_, err = EncodeOnce(OnceID{1}, 0, data)
	require.ErrorIs(t, err, ErrInvalid, "no envelope in an envelope")
	nested := append(append([]byte{}, data[:onceHeaderSize]...), data...)
	_, _, _, err = DecodeOnce(nested)
	require.ErrorIs(t, err, ErrMalformed)
	_, _, _, err = DecodeOnce(data[:onceHeaderSize])
	require.ErrorIs(t, err, ErrMalformed)
}
