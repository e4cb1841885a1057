package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// logWindow is how often, at most, memberlist's warnings and errors reach
// the log: junk sent to the gossip port produces one error per packet, and
// a flood must not become a flood of log lines. The rest are counted
// (ProblemsLogged, a metric) and summarised at the next line.
const logWindow = 10 * time.Second

// slogWriter receives memberlist's log.Logger output, one line per Write,
// formatted "[LEVEL] memberlist: message", and forwards it to slog at the
// matching level, warnings and errors at most once per logWindow. Safe for
// concurrent use.
type slogWriter struct {
	log *slog.Logger
	now func() time.Time
	// observe, when set, sees every message (without level and
	// "memberlist: " prefix) before rate limiting; it must be fast.
	observe func(msg []byte)

	problems atomic.Uint64 // warnings and errors seen, logged or not

	mu         sync.Mutex
	last       time.Time // when a warning or error was last logged
	suppressed int       // since then, not logged
}

func newSlogWriter(lg *slog.Logger) *slogWriter {
	return &slogWriter{log: lg, now: time.Now}
}

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

func (w *slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, lp := range levelPrefixes {
		if rest, ok := bytes.CutPrefix(line, []byte(lp.prefix)); ok {
			level, line = lp.level, bytes.TrimSpace(rest)
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	if w.observe != nil {
		w.observe(line)
	}
	if level < slog.LevelWarn {
		w.log.Log(context.Background(), level, string(line))
		return len(p), nil
	}
	w.problems.Add(1)
	w.mu.Lock()
	now := w.now()
	if !w.last.IsZero() && now.Sub(w.last) < logWindow {
		w.suppressed++
		w.mu.Unlock()
		return len(p), nil
	}
	suppressed := w.suppressed
	w.last, w.suppressed = now, 0
	w.mu.Unlock()
	if suppressed > 0 {
		w.log.Log(context.Background(), level, string(line), "suppressed_since_last", suppressed)
	} else {
		w.log.Log(context.Background(), level, string(line))
	}
	return len(p), nil
}
