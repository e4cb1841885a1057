// Package humanize formats values for people: the CLI's tables and the
// narration of node operations use the same spelling.
package humanize

import (
	"fmt"
	"strings"
	"time"
)

// Bytes formats b in binary units with one decimal: "512 B", "1.5 KiB",
// "3.8 GiB", up to EiB.
func Bytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for v := b / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

// Age formats a duration for a table cell, in its largest whole unit:
// "0s", "45s", "12m", "3h", "2d". Negative durations (a clock behind) are
// "0s".
func Age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int64(d/time.Second)))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int64(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int64(d/(24*time.Hour)))
}

// OrDash returns s, or "-" when s is empty, so an unknown value still fills
// its table cell.
func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Clip makes s fit for an error message or a log line: control characters
// dropped, at most n bytes of valid UTF-8, "…" when it was cut. For text
// that came from elsewhere (a server's answer, a file, a peer).
func Clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
