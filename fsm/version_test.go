package fsm

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// snapshotOf persists the FSM's own snapshot (as raft would) and returns
// its bytes.
func snapshotOf(t *testing.T, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, writeSnapshot(&buf, s.(*snapshot).state, s.(*snapshot).format))
	return buf.Bytes()
}

func TestRegistryVersionPicksSnapshotFormat(t *testing.T) {
	f := New(nil)
	applyAll(t, f, sampleCommands()...)
	require.Equal(t, 1, f.RegistryVersion())
	v1 := snapshotOf(t, f)
	require.Equal(t, byte(3), v1[4], "version 1: the JSON format every build reads")

	res := applyAll(t, f, SetRegistryVersion{Version: 2})
	require.True(t, res[0].Changed)
	require.Equal(t, 2, f.RegistryVersion())
	require.False(t, applyAll(t, f, SetRegistryVersion{Version: 1})[0].Changed, "never lowered")
	require.False(t, applyAll(t, f, SetRegistryVersion{Version: 2})[0].Changed)
	v2 := snapshotOf(t, f)
	require.Equal(t, byte(4), v2[4], "version 2: typed records")

	// Format 4 round-trips to the same state (and bytes).
	st, err := ReadSnapshot(bytes.NewReader(v2))
	require.NoError(t, err)
	require.Equal(t, 2, st.RegistryVersion())
	require.Equal(t, f.Index(), st.Index())
	require.Equal(t, snapBytes(t, f.State()), snapBytes(t, st))
	var again bytes.Buffer
	require.NoError(t, WriteSnapshot(&again, st))
	require.Equal(t, v2, again.Bytes())
	// The JSON snapshot of the same tables holds the same entities.
	old, err := ReadSnapshot(bytes.NewReader(v1))
	require.NoError(t, err)
	require.Equal(t, old.Nodes(), st.Nodes())
	require.Equal(t, old.Workers(), st.Workers())
	require.Equal(t, old.APIKeys(), st.APIKeys())

	// An old build reads format 3 and refuses format 4 (the leader never
	// sends it one: it writes format 4 only once every server reads it).
	oldBuild := New(nil, WithSupportedVersion(1))
	require.ErrorIs(t, oldBuild.Restore(nopCloser{bytes.NewReader(v2)}), ErrSnapshotVersion)
	require.NoError(t, oldBuild.Restore(nopCloser{bytes.NewReader(v1)}))
	require.Equal(t, f.State().Nodes(), oldBuild.State().Nodes())
	// A new build at registry version 1 writes format 3 for its peers.
	s, err := oldBuild.Snapshot()
	require.NoError(t, err)
	require.Equal(t, byte(3), s.(*snapshot).format)
}

// A replica that meets a command type its build does not know stops
// applying instead of diverging; it takes no snapshot (raft keeps the
// log), says why, and resumes from a leader's snapshot.
func TestUnknownCommandHaltsReplica(t *testing.T) {
	old := New(nil, WithSupportedVersion(1))
	applyAll(t, old, sampleCommands()...)
	before := old.State()
	res := old.Apply(&raft.Log{Index: 50, Type: raft.LogCommand, Data: enc(t, SetRegistryVersion{Version: 2})})
	err, ok := res.(error)
	require.True(t, ok)
	require.ErrorIs(t, err, ErrHalted)
	require.Contains(t, err.Error(), "upgrade this node")
	require.ErrorIs(t, old.Halted(), ErrHalted)
	require.Same(t, before, old.State())

	// Nothing more is applied, not even commands it knows.
	res = old.Apply(&raft.Log{Index: 51, Type: raft.LogCommand, Data: enc(t, DeleteNode{ID: "peerA"})})
	require.ErrorIs(t, res.(error), ErrHalted)
	require.Same(t, before, old.State())
	_, err = old.Snapshot()
	require.ErrorIs(t, err, ErrHalted)

	// A snapshot it can read (format 3, from a leader) resumes it.
	src := New(nil)
	applyAll(t, src, sampleCommands()...)
	applyAll(t, src, DeleteNode{ID: "peerA"})
	require.NoError(t, old.Restore(nopCloser{bytes.NewReader(snapshotOf(t, src))}))
	require.NoError(t, old.Halted())
	require.Equal(t, src.State().Nodes(), old.State().Nodes())

	// A type no build defines halts this build too.
	f := New(nil)
	res = f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{0x7f, '{', '}'}})
	require.ErrorIs(t, res.(error), ErrHalted)
}

func TestIgnorableUnknownCommandSkipped(t *testing.T) {
	f := New(nil)
	applyAll(t, f, sampleCommands()...)
	before := f.State()
	res := f.Apply(&raft.Log{Index: 90, Type: raft.LogCommand, Data: []byte{byte(IgnorableFlag | 40), '{', '}'}})
	_, isErr := res.(error)
	require.False(t, isErr, "%v", res)
	require.NoError(t, f.Halted())
	require.Same(t, before, f.State())
	applyAll(t, f, DeleteNode{ID: "peerA"})
}

func TestCheckWritable(t *testing.T) {
	require.NoError(t, CheckWritable(enc(t, DeleteNode{ID: "x"}), 1))
	require.NoError(t, CheckWritable(enc(t, SetRegistryVersion{Version: 2}), 1), "the command that raises the version")
	require.ErrorIs(t, CheckWritable(nil, 1), ErrMalformed)
	require.ErrorIs(t, CheckWritable([]byte{0x7f}, 2), ErrNeedsVersion)
	for typ := TypeUpsertNode; typ <= TypeSetRegistryVersion; typ++ {
		require.NotZero(t, Since(typ), "%s has no version", typ)
		require.LessOrEqual(t, Since(typ), Version)
		require.NotContains(t, typ.String(), "CommandType", "type %d has no name", typ)
	}
}

// record builds one format-4 record.
func record(typ byte, body string) []byte {
	b := binary.AppendUvarint([]byte{typ}, uint64(len(body)))
	return append(b, body...)
}

func TestFormat4Rejects(t *testing.T) {
	f := New(nil)
	applyAll(t, f, sampleCommands()...)
	applyAll(t, f, SetRegistryVersion{Version: 2})
	good := snapshotOf(t, f)
	hdr := []byte("RBEE\x04")
	header := record(recHeader, `{"index":3,"registry_version":2}`)
	end := record(recEnd, "")
	node := record(recNode, `{"id":"a","name":"a","state":"alive"}`)
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"no end", bytes.Join([][]byte{hdr, header}, nil), ErrMalformed},
		{"trailing", append(append([]byte{}, good...), 0), ErrMalformed},
		{"no header", bytes.Join([][]byte{hdr, node, end}, nil), ErrMalformed},
		{"two headers", bytes.Join([][]byte{hdr, header, header, end}, nil), ErrMalformed},
		{"unknown record", bytes.Join([][]byte{hdr, header, record(99, "{}"), end}, nil), ErrSnapshotVersion},
		{"newer registry", bytes.Join([][]byte{hdr, record(recHeader, `{"index":3,"registry_version":99}`), end}, nil), ErrSnapshotVersion},
		{"duplicate node", bytes.Join([][]byte{hdr, header, node, node, end}, nil), ErrMalformed},
		{"bad node", bytes.Join([][]byte{hdr, header, record(recNode, `{"id":""}`), end}, nil), ErrInvalid},
		{"body with trailing data", bytes.Join([][]byte{hdr, header, record(recNode, `{"id":"a"} {}`), end}, nil), ErrMalformed},
		{"end with a body", bytes.Join([][]byte{hdr, header, record(recEnd, "x")}, nil), ErrMalformed},
		{"huge record", bytes.Join([][]byte{hdr, header, binary.AppendUvarint([]byte{recNode}, 1<<40)}, nil), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadSnapshot(bytes.NewReader(tc.data))
			require.ErrorIs(t, err, tc.want)
		})
	}
	// An unknown record marked ignorable is skipped.
	st, err := ReadSnapshot(bytes.NewReader(bytes.Join([][]byte{hdr, header, record(recIgnored|9, `{"x":1}`), node, end}, nil)))
	require.NoError(t, err)
	require.Len(t, st.Nodes(), 1)
}
