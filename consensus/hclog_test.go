package consensus

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHCLogLinesReachSlogAtTheirLevel(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	hl := newHCLogger(log, "raft")
	hl.Info("entering follower state", "leader-id", "p1")
	hl.Warn("heartbeat timeout reached")
	hl.Error("failed to contact", "server", "p2")
	hl.Debug("details")
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	require.Contains(t, lines[0], "level=INFO")
	require.Contains(t, lines[0], "raft: entering follower state: leader-id=p1")
	require.Contains(t, lines[1], "level=WARN")
	require.Contains(t, lines[2], "level=ERROR")
	require.Contains(t, lines[3], "level=DEBUG")

	// Partial writes are buffered until the newline.
	w := &slogWriter{log: log}
	buf.Reset()
	_, _ = w.Write([]byte("[WARN]  half"))
	require.Empty(t, buf.String())
	_, _ = w.Write([]byte(" line\n"))
	require.Contains(t, buf.String(), "half line")
}
