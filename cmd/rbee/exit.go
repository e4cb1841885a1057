package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node/client"
)

// interrupted is the cause of the root context's cancellation when a
// signal (Ctrl-C, SIGTERM) stops the CLI. Like os/signal's own cause, it is
// a context.Canceled, so every error a cancelled call returns matches it.
type interrupted struct{ sig os.Signal }

func (e *interrupted) Error() string { return e.sig.String() + " signal received" }

func (e *interrupted) Is(target error) bool { return target == context.Canceled }

// exitCode is the shell's status for a process a signal stopped: 128 plus
// the signal's number (130 for SIGINT, 143 for SIGTERM).
func (e *interrupted) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok && s > 0 && s < 128 {
		return 128 + int(s)
	}
	return 128 + int(syscall.SIGINT)
}

// notifyContext is signal.NotifyContext with an *interrupted cause naming
// the signal, for execute to map to an exit status. The signals stay
// caught until stop: a second Ctrl-C does not kill the CLI while it cancels
// the job on the node or a node shuts down.
func notifyContext(parent context.Context, sigs ...os.Signal) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			cancel(&interrupted{sig: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// lineWriter passes writes on and remembers whether the last byte written
// ended a line, so that an interrupted command's output gets its newline.
type lineWriter struct {
	w       io.Writer
	midLine atomic.Bool
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.midLine.Store(p[n-1] != '\n')
	}
	return n, err
}

// execute runs root under ctx (from notifyContext) with its output to
// stdout and returns the process's exit status. A command that fails
// prints "error: …" (with a hint for some) and exits 1. A command that
// fails once a signal cancelled ctx was interrupted, whatever error its
// cancelled calls returned ("Get …: interrupt signal received"): it ends
// the line of text it streamed, says "interrupted" and exits 128+signal
// (130 for Ctrl-C); the job it ran is cancelled on the node by the client.
// A command that handles the signal and succeeds (rbee node stopping)
// exits 0.
func execute(ctx context.Context, root *cobra.Command, stdout, stderr io.Writer) int {
	out := &lineWriter{w: stdout}
	root.SetOut(out)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var sig *interrupted
	if errors.As(context.Cause(ctx), &sig) {
		if out.midLine.Load() {
			fmt.Fprintln(stdout)
		}
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintln(stderr, "error:", terminalSafe(err.Error()))
		}
		fmt.Fprintln(stderr, "interrupted")
		return sig.exitCode()
	}
	fmt.Fprintln(stderr, "error:", terminalSafe(err.Error()))
	var je *client.JobError
	if errors.As(err, &je) && je.Code == "unknown_hive" {
		fmt.Fprintln(stderr, "hint: `rbee hive list` shows the hives this cluster knows")
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		fmt.Fprintln(stderr, "hint: trust the cluster CA with --ca FILE (from `rbee tls ca` on a node) or --ca-fingerprint sha256:… (env RBEE_CA, RBEE_CA_FINGERPRINT)")
	}
	var he x509.HostnameError
	if errors.As(err, &he) {
		fmt.Fprintln(stderr, "hint: the node's certificate does not name the host in --node: use a name or address it lists, or start the node with --allowed-host "+he.Host+" (its certificate then names it too)")
	}
	return 1
}

// terminalSafe escapes the control characters of text that came from
// elsewhere (a node's error, a hub's message inside it, narration) before
// it is printed to a terminal: an ESC or a C1 code from a hostile server
// could clear the screen, retitle the window or hide what follows, and
// bidirectional overrides can make text read other than it is. Newlines
// and tabs stay.
func terminalSafe(s string) string {
	clean := true
	for _, r := range s {
		if unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unsafeRune(r) {
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == utf8.RuneError:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
