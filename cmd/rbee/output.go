package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"github.com/rbee-project/rbee/node/jobs"
)

// printJSON writes v as one indented JSON document.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints rows under a header, aligned. On a terminal the widest
// columns are shortened (with "…") to fit its width and states are
// coloured; elsewhere (pipes, files) the text is plain and complete. Cells
// come from elsewhere (a model file's architecture, a node's name): they
// are printed with cellSafe.
func table(w io.Writer, header []string, rows [][]string) {
	safe := make([][]string, len(rows))
	for i, r := range rows {
		safe[i] = make([]string, len(r))
		for j, c := range r {
			safe[i][j] = cellSafe(c)
		}
	}
	rows = safe
	width, tty := termWidth(w)
	if tty {
		rows = fitRows(header, rows, width)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := r
		if tty && colorOK() {
			cells = make([]string, len(r))
			for i, c := range r {
				cells[i] = colorize(c)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// cellSafe is terminalSafe for a table cell: a newline or a tab would also
// start a row or a column of its own, so they are escaped too.
func cellSafe(s string) string {
	if strings.ContainsAny(s, "\n\t") {
		s = strings.NewReplacer("\n", `\n`, "\t", `\t`).Replace(s)
	}
	return terminalSafe(s)
}

func termWidth(w io.Writer) (int, bool) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		return 80, true
	}
	return width, true
}

// colorOK honours NO_COLOR (https://no-color.org).
func colorOK() bool { return os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb" }

// colorize paints state words; tabwriter counts the escape bytes, so every
// coloured word gets the same number of them and columns stay aligned.
func colorize(c string) string {
	code := ""
	switch c {
	case "alive", "ready", "leader", "running", "ok", "healthy":
		code = "32"
	case "suspect", "busy", "retiring", "loading", "registering", "draining", "installed":
		code = "33"
	case "dead", "failed", "stopped", "left", "gone":
		code = "31"
	default:
		return c
	}
	return "\033[" + code + "m" + c + "\033[0m"
}

// fitRows shortens the widest columns until a row fits width.
func fitRows(header []string, rows [][]string, width int) [][]string {
	const gap, minCol = 2, 8
	widths := make([]int, len(header))
	measure := func(r []string) {
		for i, c := range r {
			if i < len(widths) && len([]rune(c)) > widths[i] {
				widths[i] = len([]rune(c))
			}
		}
	}
	measure(header)
	for _, r := range rows {
		measure(r)
	}
	total := func() int {
		t := 0
		for _, w := range widths {
			t += w + gap
		}
		return t
	}
	for total() > width {
		widest := 0
		for i, w := range widths {
			if w > widths[widest] {
				widest = i
			}
		}
		if widths[widest] <= minCol {
			break
		}
		widths[widest]--
	}
	out := make([][]string, len(rows))
	for i, r := range rows {
		out[i] = make([]string, len(r))
		for j, c := range r {
			rs := []rune(c)
			if j < len(widths) && len(rs) > widths[j] {
				c = string(rs[:widths[j]-1]) + "…"
			}
			out[i][j] = c
		}
	}
	return out
}

// narrate prints narration and progress events to stderr: stdout is kept
// for results.
func narrate(ev jobs.Event) {
	switch ev.Type {
	case jobs.TypeNarration:
		fmt.Fprintf(os.Stderr, "[%s] %s\n", terminalSafe(ev.Node), terminalSafe(ev.Message))
	case jobs.TypeProgress:
		if ev.Total > 0 {
			fmt.Fprintf(os.Stderr, "[%s] %d/%d %s (%.0f%%)\n", terminalSafe(ev.Node), ev.Done, ev.Total, terminalSafe(ev.Unit), 100*float64(ev.Done)/float64(ev.Total))
		}
	}
}
