package node

import (
	"log/slog"
	"strings"
	"sync"
	"time"
)

// acceptWarnEvery spaces the warnings of failed accepts: net/http retries
// a failed Accept after at most a second, for as long as it fails, and
// one line in ten seconds says it as well as ten.
const acceptWarnEvery = 10 * time.Second

// httpErrorLog routes net/http's own log lines (http.Server.ErrorLog) to
// the node's logger by what they say: a failed accept (the process is out
// of file descriptors: the API answers nobody until some close) is a
// warning, at most one per acceptWarnEvery with the count of the ones
// left out; a handler's panic is an error; the rest (scanners' TLS
// handshakes, clients that went away) stays at debug, as it is noise on a
// LAN. Safe for concurrent use.
type httpErrorLog struct {
	log     *slog.Logger
	now     func() time.Time
	mu      sync.Mutex
	last    time.Time
	skipped int
}

func newHTTPErrorLog(log *slog.Logger) *httpErrorLog {
	return &httpErrorLog{log: log, now: time.Now}
}

// Write takes one line of net/http's log.
func (w *httpErrorLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(msg, "http: Accept error"):
		w.mu.Lock()
		now := w.now()
		warn := w.last.IsZero() || now.Sub(w.last) >= acceptWarnEvery
		skipped := w.skipped
		if warn {
			w.last, w.skipped = now, 0
		} else {
			w.skipped++
		}
		w.mu.Unlock()
		if warn {
			w.log.Warn("the API cannot accept connections (out of file descriptors? see ulimit -n)", "err", msg, "more_since_last", skipped)
		}
	case strings.Contains(msg, "http: panic serving"):
		w.log.Error(msg)
	default:
		w.log.Debug(msg)
	}
	return len(p), nil
}
