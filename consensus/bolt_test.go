package consensus_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
)

// writeRaftDB fills dir's raft.db with log entries (some larger than a
// page, so that the file has branch, leaf and overflow pages) and closes it.
func writeRaftDB(t *testing.T, dir string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "raft"), 0o700))
	path := filepath.Join(dir, "raft", "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{NoFreelistSync: true}})
	require.NoError(t, err)
	for i := uint64(1); i <= 300; i++ {
		data := bytes.Repeat([]byte(fmt.Sprintf("entry %d ", i)), int(1+i%7)*100)
		require.NoError(t, store.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data}))
	}
	require.NoError(t, store.SetUint64([]byte("CurrentTerm"), 1))
	require.NoError(t, store.Close())
	return path
}

// A raft.db cut short or overwritten (a bad copy, a failing disk) is an
// error that names the file and what to do; bbolt, which trusts the file,
// died of SIGBUS or panicked in a goroutine on both. One that bbolt's own
// initialisation left half-written (the disk filled while a new node
// created it) holds nothing: it is created anew and the server starts.
func TestDamagedRaftDB(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, dir string)
		wantErr bool
	}{
		{"intact", func(t *testing.T, dir string) { writeRaftDB(t, dir) }, false},
		{"cut short", func(t *testing.T, dir string) {
			path := writeRaftDB(t, dir)
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(path, fi.Size()/2))
		}, true},
		{"pages overwritten", func(t *testing.T, dir string) {
			path := writeRaftDB(t, dir)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			page := os.Getpagesize()
			for i := 2 * page; i < len(b); i++ {
				b[i] = byte(i*7919>>3) ^ 0x5a
			}
			require.NoError(t, os.WriteFile(path, b, 0o600))
		}, true},
		{"half-created, three pages", func(t *testing.T, dir string) { halfCreated(t, dir, 3) }, false},
		{"half-created, one page", func(t *testing.T, dir string) { halfCreated(t, dir, 1) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t)
			cfg := cl.config("d0")
			tc.damage(t, cfg.DataDir)
			nw, err := cl.reg.Listen(cfg.LocalID)
			require.NoError(t, err)
			cfg.Network, cfg.FSM = nw, fsm.New(nil)
			c, err := consensus.New(cfg)
			if tc.wantErr {
				require.ErrorIs(t, err, consensus.ErrDamagedStore)
				require.ErrorContains(t, err, filepath.Join(cfg.DataDir, "raft", "raft.db"))
				require.ErrorContains(t, err, "move")
				return
			}
			require.NoError(t, err)
			require.NoError(t, c.Close())
		})
	}
}

// halfCreated leaves in dir the first pages of a new bolt file, as a
// disk that filled during bbolt's initialisation does.
func halfCreated(t *testing.T, dir string, pages int) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "raft"), 0o700))
	path := filepath.Join(dir, "raft", "raft.db")
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	require.NoError(t, os.Truncate(path, int64(pages*os.Getpagesize())))
}

// A server whose only snapshot is damaged cannot start; the error names
// the snapshot and what to do, where raft said only "failed to load any
// existing snapshots". A snapshot whose metadata is unreadable is skipped
// by raft, and the server starts from its log.
func TestDamagedSnapshot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		damage  func(b []byte) []byte
		wantErr bool
	}{
		{"state overwritten", "state.bin", func(b []byte) []byte {
			for i := len(b) / 3; i < len(b)/3+16 && i < len(b); i++ {
				b[i] ^= 0xff
			}
			return b
		}, true},
		{"state cut short", "state.bin", func(b []byte) []byte { return b[:len(b)/2] }, true},
		{"state empty", "state.bin", func([]byte) []byte { return nil }, true},
		{"metadata garbled", "meta.json", func([]byte) []byte { return []byte("{garbage") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := newCluster(t)
			cfg := cl.config("s0")
			cfg.BootstrapExpect = 1
			n := cl.start(cfg)
			apply(t, cl.waitLeader(), host("a"))
			require.NoError(t, n.c.Snapshot())
			cl.stop("s0")
			snaps, err := filepath.Glob(filepath.Join(cfg.DataDir, "raft", "snapshots", "*"))
			require.NoError(t, err)
			require.Len(t, snaps, 1)
			path := filepath.Join(snaps[0], tc.file)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tc.damage(b), 0o600))

			if !tc.wantErr {
				n := cl.start(cfg)
				_, ok := n.fsm.Host("a")
				require.True(t, ok, "the registry comes from the log")
				return
			}
			nw, err := cl.reg.Listen(cfg.LocalID)
			require.NoError(t, err)
			cfg.Network, cfg.FSM = nw, fsm.New(nil)
			c, err := consensus.New(cfg)
			require.NoError(t, err)
			defer c.Close()
			err = c.Start(context.Background())
			require.ErrorIs(t, err, consensus.ErrDamagedStore)
			require.ErrorContains(t, err, snaps[0])
			require.ErrorContains(t, err, "move the directory "+filepath.Join(cfg.DataDir, "raft"))
		})
	}
}
