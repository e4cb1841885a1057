package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/rbee-project/rbee/node/jobs"
)

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// narrate prints narration and progress events to stderr: stdout is kept
// for results.
func narrate(ev jobs.Event) {
	switch ev.Type {
	case jobs.TypeNarration:
		fmt.Fprintf(os.Stderr, "[%s] %s\n", ev.Node, ev.Message)
	case jobs.TypeProgress:
		if ev.Total > 0 {
			fmt.Fprintf(os.Stderr, "[%s] %d/%d %s (%.0f%%)\n", ev.Node, ev.Done, ev.Total, ev.Unit, 100*float64(ev.Done)/float64(ev.Total))
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(b uint64) string {
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
