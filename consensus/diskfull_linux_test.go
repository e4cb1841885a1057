package consensus_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/tmpfstest"
)

// copyTree copies the regular files and directories under src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}))
}

// moveOnto restarts follower f with its data dir copied onto mnt.
func moveOnto(t *testing.T, cl *cluster, cfgs map[string]consensus.Config, f *testNode, mnt string) *testNode {
	t.Helper()
	cl.stop(f.id)
	copyTree(t, cfgs[f.id].DataDir, mnt)
	cfg := cfgs[f.id]
	cfg.DataDir = mnt
	f = cl.start(cfg)
	waitHost(t, "before", f)
	require.Eventually(t, func() bool { return !f.c.Stale() }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, f.c.StoreError())
	return f
}

// A follower whose disk fills keeps answering the leader's heartbeats (they
// store nothing) while every append of new entries fails: its registry
// falls behind. It must say so (stale, with the store's error) rather than
// serve the old registry as current, and catch up by itself, without a
// restart, once space is freed.
func TestFollowerWithFullDiskIsStaleUntilSpaceIsFreed(t *testing.T) {
	mnt := tmpfstest.Mount(t, 4<<20)
	cl, _, cfgs, leader := startThree(t, "d")
	apply(t, leader, host("before"))
	waitHost(t, "before", cl.running()...)

	f := moveOnto(t, cl, cfgs, cl.followers(leader)[0], mnt)

	filler := tmpfstest.Fill(t, mnt)
	// Writes still commit (the leader and the other follower are a
	// quorum); the full follower's stores fail until it says so.
	i := 0
	require.Eventually(t, func() bool {
		i++
		apply(t, leader, host(fmt.Sprintf("while-full-%d", i)))
		return f.c.StoreError() != nil
	}, 30*time.Second, time.Millisecond, "the full follower never reported its failing stores")
	err := f.c.StoreError()
	require.ErrorIs(t, err, consensus.ErrStoreFailing)
	require.ErrorIs(t, err, syscall.ENOSPC)
	require.Contains(t, err.Error(), mnt)
	apply(t, leader, host("last-while-full"))
	// Heartbeats keep arriving, yet the replica is behind: stale.
	require.True(t, f.c.Stale(), "a follower that cannot store entries serves a stale registry")
	_, has := f.fsm.Host("last-while-full")
	require.False(t, has, "the full follower applied an entry it could not store")

	// Space is freed: the leader's retries land, the replica catches up.
	require.NoError(t, os.Remove(filler))
	waitHost(t, "last-while-full", f)
	require.Eventually(t, func() bool { return f.c.StoreError() == nil && !f.c.Stale() }, 15*time.Second, 10*time.Millisecond)
}

// With one voter of three gone and another unable to store entries (its
// disk full), the leader stays leader (the full one answers it) but
// commits nothing. A write, sent on the leader or forwarded from the full
// follower, then ends with no_quorum ("did not commit", where waiting out
// the caller's deadline would say no leader and the context's error),
// saying it may still commit; once space is freed it commits.
func TestWriteWithoutAStoringMajorityEndsWithNoQuorum(t *testing.T) {
	for _, forwarded := range []bool{false, true} {
		t.Run(fmt.Sprintf("forwarded=%v", forwarded), func(t *testing.T) {
			mnt := tmpfstest.Mount(t, 4<<20)
			cl, _, cfgs, leader := startThree(t, fmt.Sprintf("q%v", forwarded))
			apply(t, leader, host("before"))
			waitHost(t, "before", cl.running()...)
			full := moveOnto(t, cl, cfgs, cl.followers(leader)[0], mnt)
			leader = cl.waitLeader()
			filler := tmpfstest.Fill(t, mnt)
			i := 0
			require.Eventually(t, func() bool {
				i++
				apply(t, leader, host(fmt.Sprintf("filling-%d", i)))
				return full.c.StoreError() != nil
			}, 30*time.Second, time.Millisecond, "the full follower's stores never failed")
			for _, n := range cl.followers(leader) {
				if n != full {
					cl.stop(n.id)
				}
			}
			leader = cl.waitLeader()
			require.NotEqual(t, full.id, leader.id, "a server that cannot store its no-op does not stay leader")

			b, err := fsm.Encode(host("no-majority"))
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			from := leader
			if forwarded {
				from = full
			}
			_, err = from.c.Apply(ctx, b)
			require.ErrorIs(t, err, consensus.ErrNoQuorum)
			require.ErrorIs(t, err, consensus.ErrOutcomeUnknown)
			require.NotErrorIs(t, err, context.DeadlineExceeded)
			require.Contains(t, err.Error(), "did not commit")

			// Space is freed: the write that was sent commits after all.
			require.NoError(t, os.Remove(filler))
			waitHost(t, "no-majority", leader, full)
		})
	}
}
