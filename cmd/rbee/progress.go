package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node/jobs"
)

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// progress draws a one-line progress bar on a terminal (and nothing
// elsewhere: scripts get the result, not a bar).
type progress struct {
	w       io.Writer
	tty     bool
	start   time.Time
	drawn   bool
	lastOut time.Time
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: w, tty: tty, start: time.Now()}
}

func (p *progress) update(ev jobs.Event) {
	if !p.tty || time.Since(p.lastOut) < 100*time.Millisecond && ev.Done < ev.Total {
		return
	}
	p.lastOut = time.Now()
	width := 30
	line := ""
	el := time.Since(p.start).Seconds()
	rate := ev.Rate // the node's figure, when it sends one
	if rate == 0 && el > 0 {
		rate = float64(ev.Done) / el
	}
	if ev.Total > 0 {
		frac := float64(ev.Done) / float64(ev.Total)
		if frac > 1 {
			frac = 1
		}
		fill := int(frac * float64(width))
		eta := "-"
		if ev.ETAMs > 0 {
			eta = (time.Duration(ev.ETAMs) * time.Millisecond).Round(time.Second).String()
		} else if rate > 0 {
			eta = (time.Duration(float64(ev.Total-ev.Done)/rate) * time.Second).Round(time.Second).String()
		}
		line = fmt.Sprintf("[%s%s] %5.1f%% %s/%s %s/s ETA %s", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
			frac*100, humanize.Bytes(uint64(ev.Done)), humanize.Bytes(uint64(ev.Total)), humanize.Bytes(uint64(rate)), eta)
	} else {
		line = fmt.Sprintf("%s %s/s", humanize.Bytes(uint64(ev.Done)), humanize.Bytes(uint64(rate)))
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
	p.drawn = true
}

func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}
