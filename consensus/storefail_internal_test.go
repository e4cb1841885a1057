package consensus

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
)

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "mem" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// TestSnapshotInstallClearsStoreFailure: a follower whose stores failed
// (a full disk) and that then caught up by a snapshot from the leader,
// storing no entry, is current again: its store failure is over.
func TestSnapshotInstallClearsStoreFailure(t *testing.T) {
	c := &Consensus{}
	c.replay = &replayFSM{inner: fsm.New(slog.New(slog.DiscardHandler))}
	c.replay.restored = func() { c.storeFailing.note(nil) }
	c.storeFailing.note(errors.New("no space left on device"))
	_, err := c.storeFailing.get()
	require.Error(t, err)

	src := fsm.New(slog.New(slog.DiscardHandler))
	snap, err := src.Snapshot()
	require.NoError(t, err)
	var sink bufSink
	require.NoError(t, snap.Persist(&sink))
	require.NoError(t, c.replay.Restore(io.NopCloser(&sink.Buffer)))
	_, err = c.storeFailing.get()
	require.NoError(t, err)

	// A snapshot that does not restore clears nothing.
	c.storeFailing.note(errors.New("no space left on device"))
	require.Error(t, c.replay.Restore(io.NopCloser(bytes.NewReader([]byte("junk")))))
	_, err = c.storeFailing.get()
	require.Error(t, err)
}
