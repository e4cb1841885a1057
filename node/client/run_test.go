package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
)

// jobServer speaks the node's job protocol for one job: a submit that
// streams the events (stream: how many before the stream breaks, -1 all),
// or a 202 as an older node answers (stream 0 with old), and the events
// URL, which resumes after Last-Event-ID.
type jobServer struct {
	mu       sync.Mutex
	requests []string
	old      bool
	stream   int
}

var jobEvents = []jobs.Event{
	{Seq: 1, Type: jobs.TypeNarration, Message: "working"},
	{Seq: 2, Type: jobs.TypeResult, Result: json.RawMessage(`{"ok":true}`)},
	{Seq: 3, Type: jobs.TypeDone, Status: "ok"},
}

func (s *jobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path+" "+r.Header.Get("Last-Event-ID"))
	s.mu.Unlock()
	send := func(evs []jobs.Event) {
		sw := sse.Start(w)
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			_ = sw.Event(sse.Event{ID: fmt.Sprint(ev.Seq), Type: ev.Type, Data: b})
		}
	}
	switch {
	case r.Method == http.MethodPost && s.old:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"job_id":"j1","events_url":"/v1/jobs/j1/events"}`))
	case r.Method == http.MethodPost:
		w.Header().Set(api.JobIDHeader, "j1")
		n := len(jobEvents)
		if s.stream >= 0 {
			n = s.stream
		}
		send(jobEvents[:n])
	case r.URL.Path == "/v1/jobs/j1/events":
		after := 0
		fmt.Sscan(r.Header.Get("Last-Event-ID"), &after)
		send(jobEvents[after:])
	default:
		http.NotFound(w, r)
	}
}

func TestRunFollowsTheJob(t *testing.T) {
	for _, tc := range []struct {
		name     string
		srv      *jobServer
		requests []string
	}{
		{"one round trip", &jobServer{stream: -1}, []string{"POST /v1/jobs "}},
		{"an older node's 202", &jobServer{old: true}, []string{"POST /v1/jobs ", "GET /v1/jobs/j1/events "}},
		{"a stream that breaks resumes", &jobServer{stream: 2}, []string{"POST /v1/jobs ", "GET /v1/jobs/j1/events 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(tc.srv)
			defer hs.Close()
			var out struct {
				OK bool `json:"ok"`
			}
			var seen []int64
			err := New(hs.URL, "").Result(t.Context(), api.StatusRequest{}, &out, func(ev jobs.Event) { seen = append(seen, ev.Seq) })
			require.NoError(t, err)
			require.True(t, out.OK)
			require.Equal(t, []int64{1, 2, 3}, seen, "every event once, in order")
			require.Equal(t, tc.requests, tc.srv.requests)
		})
	}
}

// TestFollowLostNode: a node that goes away while the CLI follows a job
// (stopped, killed) is named as lost, after the reconnects, instead of the
// bare transport error ("Get …/events: connection refused").
func TestFollowLostNode(t *testing.T) {
	var hs *httptest.Server
	hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.JobIDHeader, "j1")
		sw := sse.Start(w)
		b, _ := json.Marshal(jobEvents[0])
		_ = sw.Event(sse.Event{ID: "1", Type: jobEvents[0].Type, Data: b})
		go hs.Close() // the node dies after its first event
	}))
	defer hs.Close()
	err := New(hs.URL, "").Result(t.Context(), api.StatusRequest{}, nil, nil)
	require.ErrorContains(t, err, "lost the node at "+hs.URL+" while following job j1")
	require.ErrorContains(t, err, "connection refused")
}

// TestRunPastItsTimeLimit: a job that gives no result within the
// command's time limit (a registry write that waits for a commit) is
// named as such and cancelled, not reported as the transport's
// "Get …/events: context deadline exceeded".
func TestRunPastItsTimeLimit(t *testing.T) {
	var mu sync.Mutex
	var cancelled []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			mu.Lock()
			cancelled = append(cancelled, r.URL.Path)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"cancelling"}`))
			return
		}
		w.Header().Set(api.JobIDHeader, "j1")
		sw := sse.Start(w)
		b, _ := json.Marshal(jobEvents[0])
		_ = sw.Event(sse.Event{ID: "1", Type: jobEvents[0].Type, Data: b})
		<-r.Context().Done() // then nothing: the job waits
	}))
	defer hs.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := New(hs.URL, "").Result(ctx, api.StatusRequest{}, nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "job j1 on "+hs.URL+" did not end within this command's time limit")
	require.ErrorContains(t, err, "it was cancelled")
	require.NotContains(t, err.Error(), "Get ")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"/v1/jobs/j1"}, cancelled)
}

// TestWrongScheme: http:// to an HTTPS listener and https:// to a plain
// one say which scheme the listener speaks, not Go's transport text or
// "is `rbee node` running?".
func TestWrongScheme(t *testing.T) {
	js := &jobServer{stream: -1}
	tlsSrv := httptest.NewTLSServer(js)
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(js)
	defer plainSrv.Close()
	for _, tc := range []struct {
		name, base, want string
	}{
		{"http to an https listener", strings.Replace(tlsSrv.URL, "https://", "http://", 1), "use an https:// URL"},
		{"https to an http listener", strings.Replace(plainSrv.URL, "http://", "https://", 1), "plain HTTP listener"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := New(tc.base, "").Result(t.Context(), api.StatusRequest{}, nil, nil)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "is `rbee node` running")
		})
	}
}

// TestTokenNoHeaderCarries: a token with a line break or a space (an
// RBEE_TOKEN copied with the end of its line) is refused before anything
// is sent, with an error that says so and does not echo the token,
// rather than Go's "invalid header field value" dressed as an
// unreachable node.
func TestTokenNoHeaderCarries(t *testing.T) {
	js := &jobServer{stream: -1}
	hs := httptest.NewServer(js)
	defer hs.Close()
	for _, tok := range []string{"rbk_secretpart\n", "rbk_secret part", "rbk_secret\x01", "\trbk_secret"} {
		err := New(hs.URL, tok).Result(t.Context(), api.StatusRequest{}, nil, nil)
		require.ErrorIs(t, err, ErrBadToken, "%q", tok)
		require.NotContains(t, err.Error(), "secret")
		require.NotContains(t, err.Error(), "is `rbee node` running")
		_, err = New(hs.URL, tok).Submit(t.Context(), api.StatusRequest{})
		require.ErrorIs(t, err, ErrBadToken, "%q", tok)
	}
	require.Empty(t, js.requests, "a request went out")
}

// TestTokenNotSentInClear: an API key is not sent to an http:// node off
// this machine (a careless --node http://lan-host:7843, or a node's plain
// port opened with --insecure-http) unless AllowPlainHTTP; it still goes
// to loopback over http and anywhere over https. The "LAN" address is
// dialled to a loopback test server: nothing leaves the machine.
func TestTokenNotSentInClear(t *testing.T) {
	js := &jobServer{stream: -1}
	hs := httptest.NewServer(js)
	defer hs.Close()
	toTest := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, hs.Listener.Addr().String())
	}}}
	for _, tc := range []struct {
		name, base string
		allow      bool
		wantErr    error
	}{
		{"lan, plain http", "http://192.0.2.10:7843", false, ErrPlainHTTP},
		{"lan name, plain http", "http://gpu-box.lan:7833", false, ErrPlainHTTP},
		{"lan, plain http allowed", "http://192.0.2.10:7833", true, nil},
		{"loopback", "http://127.0.0.1:7833", false, nil},
		{"localhost", "http://localhost:7833", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(js.requests)
			c := New(tc.base, "rbk_secret")
			c.HTTP, c.AllowPlainHTTP = toTest, tc.allow
			err := c.Result(t.Context(), api.StatusRequest{}, nil, nil)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Equal(t, before, len(js.requests), "the key went out")
				require.NotContains(t, err.Error(), "rbk_secret")
				return
			}
			require.NoError(t, err)
		})
	}
	// A job that first asks the node's version (it sets a field an older
	// build would ignore) sends its key no more than any other request.
	before := len(js.requests)
	c := New("http://gpu-box.lan:7833", "rbk_secret")
	c.HTTP = toTest
	err := c.Run(t.Context(), map[string]any{"operation": "worker_spawn", "model": "m", "shards": 2}, func(jobs.Event) error { return nil })
	require.ErrorIs(t, err, ErrPlainHTTP)
	require.Equal(t, before, len(js.requests), "the key went out")
	// Without a key nothing is secret: a plain request goes out.
	c = New("http://192.0.2.10:7833", "")
	c.HTTP = toTest
	require.NoError(t, c.Result(t.Context(), api.StatusRequest{}, nil, nil))
}

// TestForeignServerError: a --node that is not an rbee node (another web
// server on the port) answers with its own page: the error says so with a
// short excerpt of its text, not the whole HTML page.
func TestForeignServerError(t *testing.T) {
	page := "<!DOCTYPE HTML>\n<html lang=\"en\">\n  <head><title>Error response</title></head>\n  <body>\n    <h1>Error response</h1>\n" +
		"    <p>Message: Unsupported method ('POST').</p>\n" + strings.Repeat("    <p>padding \x1b[31m</p>\n", 200) + "  </body>\n</html>\n"
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = w.Write([]byte(page))
	}))
	defer hs.Close()
	for _, run := range []func() error{
		func() error { return New(hs.URL, "").Result(t.Context(), api.StatusRequest{}, nil, nil) },
		func() error { _, err := New(hs.URL, "").Submit(t.Context(), api.StatusRequest{}); return err },
	} {
		err := run()
		var ae *APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, http.StatusNotImplemented, ae.Status)
		require.Contains(t, ae.Message, "did not answer as an rbee node's API")
		require.Contains(t, ae.Message, "Error response Error response Message: Unsupported method ('POST').")
		require.NotContains(t, ae.Message, "<")
		require.NotContains(t, ae.Message, "\x1b")
		require.Less(t, len(ae.Message), 300)
	}
}
