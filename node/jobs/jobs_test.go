package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func collect(t *testing.T, j *Job, after int64) []Event {
	t.Helper()
	var out []Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, j.Follow(ctx, after, func(ev Event) error { out = append(out, ev); return nil }))
	return out
}

// writeDevFull returns the error of a write to /dev/full: ENOSPC from the
// kernel, as a write on a full file system gets it.
func writeDevFull(t *testing.T) error {
	t.Helper()
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer f.Close()
	_, err = f.Write([]byte("x"))
	require.ErrorIs(t, err, syscall.ENOSPC)
	return err
}

func TestJobLifecycle(t *testing.T) {
	cases := []struct {
		name     string
		fn       Func
		types    []string
		status   string
		wantCode string
	}{
		{"ok", func(ctx context.Context, em Emitter) error {
			em.Narrate("a", "b", "hello %d", 1)
			em.Progress(1, 2, "bytes")
			return em.Result(map[string]int{"x": 1})
		}, []string{TypeNarration, TypeProgress, TypeResult, TypeDone}, "ok", ""},
		{"coded error", func(ctx context.Context, em Emitter) error {
			return Errorf(CodeNotFound, "no such thing")
		}, []string{TypeError, TypeDone}, "failed", CodeNotFound},
		{"plain error", func(ctx context.Context, em Emitter) error {
			return errors.New("boom")
		}, []string{TypeError, TypeDone}, "failed", CodeInternal},
		{"panic", func(ctx context.Context, em Emitter) error {
			panic("bad")
		}, []string{TypeError, TypeDone}, "failed", CodeInternal},
		{"disk full", func(ctx context.Context, em Emitter) error {
			// A real write to a full device (what a catalog, index or log
			// write on a full data dir returns), wrapped as callers do.
			return fmt.Errorf("catalog: copying x: %w", writeDevFull(t))
		}, []string{TypeError, TypeDone}, "failed", CodeUnavailable},
		{"read-only file system", func(ctx context.Context, em Emitter) error {
			return fmt.Errorf("writing index: %w", &os.PathError{Op: "open", Path: "/data/models/index.json", Err: syscall.EROFS})
		}, []string{TypeError, TypeDone}, "failed", CodeUnavailable},
		{"permission denied", func(ctx context.Context, em Emitter) error {
			// A models/ dir another user owns, a file the node's user may
			// not read: the node's setup, not the request, and not a bug.
			return fmt.Errorf("catalog: %w", &os.PathError{Op: "open", Path: "/data/models/x.gguf", Err: syscall.EACCES})
		}, []string{TypeError, TypeDone}, "failed", CodeUnavailable},
		{"operation not permitted", func(ctx context.Context, em Emitter) error {
			return fmt.Errorf("chown: %w", &os.PathError{Op: "chown", Path: "/data/models", Err: syscall.EPERM})
		}, []string{TypeError, TypeDone}, "failed", CodeUnavailable},
		{"coded disk full keeps its code", func(ctx context.Context, em Emitter) error {
			return &Error{Code: CodeConflict, Err: writeDevFull(t)}
		}, []string{TypeError, TypeDone}, "failed", CodeConflict},
		{"reported", func(ctx context.Context, em Emitter) error {
			em.Emit(Event{Type: TypeError, Code: CodeUnknownHive, Message: "remote"})
			return ErrReported
		}, []string{TypeError, TypeDone}, "failed", CodeUnknownHive},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New(Config{Node: "n1"})
			defer m.Close()
			j, err := m.Submit(context.Background(), "x", tc.fn)
			require.NoError(t, err)
			evs := collect(t, j, 0)
			var types []string
			for i, ev := range evs {
				types = append(types, ev.Type)
				require.Equal(t, int64(i+1), ev.Seq)
				require.Equal(t, "n1", ev.Node)
				if ev.Type == TypeError {
					require.Equal(t, tc.wantCode, ev.Code)
				}
			}
			require.Equal(t, tc.types, types)
			require.Equal(t, tc.status, j.Status())
			require.Equal(t, tc.status, evs[len(evs)-1].Status)
		})
	}
}

func TestReplayAfterSeq(t *testing.T) {
	m := New(Config{})
	defer m.Close()
	j, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error {
		for i := 0; i < 5; i++ {
			em.Narrate("t", "n", "%d", i)
		}
		return nil
	})
	require.NoError(t, err)
	all := collect(t, j, 0)
	require.Len(t, all, 6)
	rest := collect(t, j, 3)
	require.Equal(t, all[3:], rest)
	require.Empty(t, collect(t, j, 6))
}

func TestCancel(t *testing.T) {
	m := New(Config{})
	defer m.Close()
	started := make(chan struct{})
	j, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	require.NoError(t, err)
	<-started
	require.NoError(t, m.Cancel(j.ID))
	evs := collect(t, j, 0)
	require.Equal(t, TypeError, evs[0].Type)
	require.Equal(t, CodeCancelled, evs[0].Code)
	require.Equal(t, Event{Type: TypeDone, Status: StatusCancelled}, Event{Type: evs[len(evs)-1].Type, Status: evs[len(evs)-1].Status})
	require.Equal(t, StatusCancelled, j.Status())
	require.ErrorIs(t, m.Cancel("job_nope"), ErrNotFound)

	// A job that fails on its own, and one that had ended: not
	// "cancelled".
	failed, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error {
		return Errorf(CodeBadRequest, "no")
	})
	require.NoError(t, err)
	collect(t, failed, 0)
	require.Equal(t, "failed", failed.Status())
	require.NoError(t, m.Cancel(failed.ID))
	require.Equal(t, "failed", failed.Status())
}

func TestRetentionBound(t *testing.T) {
	m := New(Config{MaxJobs: 3})
	defer m.Close()
	for i := 0; i < 10; i++ {
		j, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error { return nil })
		require.NoError(t, err)
		collect(t, j, 0)
	}
	require.LessOrEqual(t, len(m.List()), 3)
}

// Finished jobs together keep at most MaxRetainedEvents events: the
// oldest are dropped (before their Retain), the newest stays readable.
func TestRetainedEventsBound(t *testing.T) {
	m := New(Config{MaxEvents: 100, MaxRetainedEvents: 250})
	defer m.Close()
	var ids []string
	for range 5 {
		j, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error {
			for i := 0; i < 200; i++ {
				em.Narrate("t", "n", "%d", i)
			}
			return nil
		})
		require.NoError(t, err)
		collect(t, j, 0)
		ids = append(ids, j.ID)
	}
	require.Eventually(t, func() bool {
		kept := 0
		for _, j := range m.List() {
			evs, _, _ := j.Events(0)
			kept += len(evs)
		}
		return kept <= 250
	}, 5*time.Second, 10*time.Millisecond)
	_, err := m.Get(ids[len(ids)-1])
	require.NoError(t, err, "the newest finished job stays")
	_, err = m.Get(ids[0])
	require.ErrorIs(t, err, ErrNotFound, "the oldest went")
}

func TestEventCap(t *testing.T) {
	m := New(Config{MaxEvents: 10})
	defer m.Close()
	j, err := m.Submit(context.Background(), "x", func(ctx context.Context, em Emitter) error {
		for i := 0; i < 100; i++ {
			em.Narrate("t", "n", "%d", i)
		}
		return errors.New("late")
	})
	require.NoError(t, err)
	evs := collect(t, j, 0)
	require.Len(t, evs, 10)
	require.Equal(t, TypeError, evs[8].Type)
	require.Equal(t, TypeDone, evs[9].Type)
}

// TestOwnerCannotFillTheTable: one owner's running jobs stop at
// MaxOwnerJobs (ErrOwnerBusy) while other owners still submit; when the
// owners together hold MaxJobs, the Unbounded owner (the admin) can still
// act, and a finished job frees its owner's place.
func TestOwnerCannotFillTheTable(t *testing.T) {
	m := New(Config{MaxJobs: 6, MaxOwnerJobs: 2, Unbounded: "admin"})
	release := make(chan struct{})
	defer func() { close(release); m.Close() }()
	block := func(ctx context.Context, em Emitter) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	steps := []struct {
		owner string
		want  error
	}{
		{"uid:1001", nil},
		{"uid:1001", nil},
		{"uid:1001", ErrOwnerBusy}, // its own bound
		{"key:webui#1", nil},       // others are not held up
		{"key:webui#1", nil},
		{"key:webui#2", nil}, // a reissued key is another owner
		{"key:webui#2", nil}, // the table's 6
		{"uid:1002", ErrTooMany},
		{"admin", nil}, // the admin goes past MaxJobs
	}
	for i, s := range steps {
		_, err := m.SubmitOwned(context.Background(), "x", s.owner, block)
		if s.want == nil {
			require.NoError(t, err, "step %d (%s)", i, s.owner)
		} else {
			require.ErrorIs(t, err, s.want, "step %d (%s)", i, s.owner)
		}
	}
	// A finished job gives its owner its place back.
	m2 := New(Config{MaxJobs: 10, MaxOwnerJobs: 1})
	defer m2.Close()
	j, err := m2.SubmitOwned(context.Background(), "x", "uid:1001", func(ctx context.Context, em Emitter) error { return nil })
	require.NoError(t, err)
	collect(t, j, 0)
	_, err = m2.SubmitOwned(context.Background(), "x", "uid:1001", func(ctx context.Context, em Emitter) error { return nil })
	require.NoError(t, err)
}
