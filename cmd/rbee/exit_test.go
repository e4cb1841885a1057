package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeJobNode answers POST /v1/jobs as a node does, with an event stream
// for job j1: the events, then (when hang) nothing until the client goes
// away, or else a done event. It records the requests and each submitted
// job's body.
type fakeJobNode struct {
	events []jobs.Event
	hang   bool

	mu       sync.Mutex
	requests []string
	bodies   []map[string]any
}

func (s *fakeJobNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	s.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/jobs":
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		w.Header().Set(api.JobIDHeader, "j1")
		sw := sse.Start(w)
		evs := s.events
		if !s.hang {
			evs = append(evs, jobs.Event{Type: jobs.TypeDone, Status: "ok"})
		}
		for i, ev := range evs {
			ev.Seq = int64(i + 1)
			b, _ := json.Marshal(ev)
			_ = sw.Event(sse.Event{ID: fmt.Sprint(ev.Seq), Type: ev.Type, Data: b})
		}
		if s.hang {
			<-r.Context().Done()
		}
	case r.Method == http.MethodDelete && r.URL.Path == "/v1/jobs/j1":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	default:
		http.NotFound(w, r)
	}
}

func (s *fakeJobNode) saw(req string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.requests {
		if r == req {
			return true
		}
	}
	return false
}

// TestInterruptExits130: a signal during a streaming command (cancelled
// as notifyContext cancels it) ends the streamed line, says "interrupted"
// instead of the cancelled call's error, exits 130 (143 for SIGTERM), and
// the job is cancelled on the node.
func TestInterruptExits130(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		events     []jobs.Event
		sig        os.Signal
		wantStdout string // when the stream reached the command
		code       int
	}{
		{"infer", []string{"infer", "--model", "m", "Once"}, []jobs.Event{{Type: jobs.TypeToken, Text: " upon a"}}, os.Interrupt, " upon a\n", 130},
		{"infer SIGTERM", []string{"infer", "--model", "m", "Once"}, []jobs.Event{{Type: jobs.TypeToken, Text: " upon a"}}, syscall.SIGTERM, " upon a\n", 143},
		{"infer, no text yet", []string{"infer", "--model", "m", "Once"}, []jobs.Event{{Type: jobs.TypeNarration, Actor: "x", Message: "queued"}}, os.Interrupt, "", 130},
		{"worker spawn", []string{"worker", "spawn", "--model", "builtin:stories260k"}, []jobs.Event{{Type: jobs.TypeNarration, Actor: "x", Message: "spawning"}}, os.Interrupt, "", 130},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeJobNode{events: tc.events, hang: true}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			root := newRootCmd()
			root.SetArgs(append(tc.args, "--node", srv.URL, "--token", "t"))
			var stdout, stderr syncBuffer
			code := make(chan int, 1)
			go func() { code <- execute(ctx, root, &stdout, &stderr) }()
			require.Eventually(t, func() bool {
				return fake.saw("POST /v1/jobs") && stdout.String() == strings.TrimSuffix(tc.wantStdout, "\n")
			}, 10*time.Second, 5*time.Millisecond)
			time.Sleep(50 * time.Millisecond) // the client reads the events it was sent
			cancel(&interrupted{sig: tc.sig})
			select {
			case c := <-code:
				require.Equal(t, tc.code, c)
			case <-time.After(10 * time.Second):
				t.Fatal("the command did not return after the interrupt")
			}
			require.Equal(t, tc.wantStdout, stdout.String())
			require.Equal(t, "interrupted\n", stderr.String(), "no error: … line")
			require.Eventually(t, func() bool { return fake.saw("DELETE /v1/jobs/j1") }, 5*time.Second, 5*time.Millisecond, "the job is cancelled on the node")
		})
	}
}

// TestExecuteExitCodes: a failure is "error: …" and 1; a failure after a
// signal that is not the cancellation is still printed; success is 0 even
// after a signal (rbee node stopping on Ctrl-C).
func TestExecuteExitCodes(t *testing.T) {
	boom := errors.New("boom")
	interruptedCtx := func() context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(&interrupted{sig: os.Interrupt})
		return ctx
	}
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		err        error
		code       int
		wantStderr string
	}{
		{"ok", context.Background(), nil, 0, ""},
		{"error", context.Background(), boom, 1, "error: boom\n"},
		{"plain cancel is an error", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}(), context.Canceled, 1, "error: context canceled\n"},
		{"interrupted", interruptedCtx(), fmt.Errorf("Get \"http://x/v1/jobs/j1/events\": %w", &interrupted{sig: os.Interrupt}), 130, "interrupted\n"},
		{"interrupted, other error", interruptedCtx(), boom, 130, "error: boom\ninterrupted\n"},
		{"interrupted, succeeded", interruptedCtx(), nil, 0, ""},
		// A hub's message inside a node's error must not drive the terminal.
		{"terminal escapes from a server", context.Background(),
			errors.New("not found (HTTP 404: \x1b[2J\x1b]0;title\x07\u009b31m\u202egnp.exe)\nnext line"), 1,
			"error: not found (HTTP 404: \\x1b[2J\\x1b]0;title\\a\\u009b31m\\u202egnp.exe)\nnext line\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd()
			err := tc.err
			root.AddCommand(&cobra.Command{Use: "test-exit", RunE: func(*cobra.Command, []string) error { return err }})
			root.SetArgs([]string{"test-exit"})
			var stderr bytes.Buffer
			require.Equal(t, tc.code, execute(tc.ctx, root, io.Discard, &stderr))
			require.Equal(t, tc.wantStderr, stderr.String())
		})
	}
}

// TestTLSHints: a certificate the CLI cannot verify gets a hint that says
// what to do: trust the CA for an unknown authority; for a certificate
// that does not name the host in --node, a name it lists or
// --allowed-host on the node (trusting a CA would not help).
func TestTLSHints(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		hint string
	}{
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, "--ca FILE"},
		{"wrong name", &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"n1"}}, Host: "gpu-box"}}, "--allowed-host gpu-box"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootCmd()
			err := fmt.Errorf("the node at https://gpu-box:7843 is not trusted: %w", tc.err)
			root.AddCommand(&cobra.Command{Use: "test-tls", RunE: func(*cobra.Command, []string) error { return err }})
			root.SetArgs([]string{"test-tls"})
			var stderr bytes.Buffer
			require.Equal(t, 1, execute(context.Background(), root, io.Discard, &stderr))
			require.Contains(t, stderr.String(), "hint:")
			require.Contains(t, stderr.String(), tc.hint)
		})
	}
}
