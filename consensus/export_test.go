package consensus

import (
	"context"
	"path/filepath"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// SetPersistedApplied rewrites the applied index in the stable store of a
// closed server's data dir, as a crash before the rate-limited write
// leaves it.
func SetPersistedApplied(dataDir string, index uint64) error {
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, "raft", "raft.db"), BoltOptions: boltOptions()})
	if err != nil {
		return err
	}
	defer store.Close()
	return store.SetUint64(keyAppliedIndex, index)
}

// AppliedHintPath is the applied hint file of a data dir.
func AppliedHintPath(dataDir string) string {
	return filepath.Join(dataDir, "raft", appliedHintFile)
}

// WriteAppliedHint writes a hint record into a closed server's data dir.
func WriteAppliedHint(dataDir string, index, term uint64) error {
	h, err := openAppliedHint(filepath.Join(dataDir, "raft"))
	if err != nil {
		return err
	}
	defer h.Close()
	return h.write(index, term)
}

// ReadAppliedHint reads the hint record of a closed server's data dir.
func ReadAppliedHint(dataDir string) (index, term uint64, err error) {
	h, err := openAppliedHint(filepath.Join(dataDir, "raft"))
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	return h.read()
}

// ApplyWithBase is Apply with the request's Base set to base, as a
// server whose registry lags far behind would send it.
func ApplyWithBase(c *Consensus, ctx context.Context, cmd []byte, base uint64) (any, error) {
	req, err := c.newRequest(cmd)
	if err != nil {
		return nil, err
	}
	if err := req.wrap(base); err != nil {
		return nil, err
	}
	return c.apply(ctx, req)
}

// Rebased is how many requests c sent again with a newer Base.
func Rebased(c *Consensus) int64 { return c.rebased.Load() }

// SetFeedRing caps the commands server c keeps for its feeds at n.
func SetFeedRing(c *Consensus, n int) {
	c.replay.mu.Lock()
	defer c.replay.mu.Unlock()
	c.replay.ring.maxEntries = n
}

// PreferredVoter returns the voter replica c asks first for a feed ("" if
// it knows none).
func PreferredVoter(c *Consensus) string {
	if v := c.orderedVoters(); len(v) > 0 {
		return v[0]
	}
	return ""
}
