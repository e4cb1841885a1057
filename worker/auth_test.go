package worker

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSecretRequired: every route, /health included, answers 401 to a
// request without the worker's secret, or with another one; with it the
// same routes answer.
func TestSecretRequired(t *testing.T) {
	_, base := startServer(t, testConfig(t))
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/health", ""},
		{http.MethodGet, "/v1/info", ""},
		{http.MethodGet, "/v1/models", ""},
		{http.MethodPost, "/v1/infer", `{"prompt":"Once upon a time","max_tokens":2}`},
		{http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`},
		{http.MethodPost, "/v1/completions", `{"prompt":"Once upon a time","max_tokens":2}`},
		{http.MethodPost, "/v1/embeddings", `{"input":"Once upon a time"}`},
	}
	for _, auth := range []string{"", "Bearer ", "Bearer wrong-secret-0123456789", "Bearer " + testSecret + "x",
		"Bearer " + testSecret[:len(testSecret)-1], "Basic " + testSecret, testSecret, "bearer " + testSecret} {
		for _, rt := range routes {
			req, err := http.NewRequestWithContext(testCtx(t), rt.method, base+rt.path, strings.NewReader(rt.body))
			require.NoError(t, err)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req) // no secret added
			require.NoError(t, err)
			var eb ErrorBody
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with %q", rt.method, rt.path, auth)
			require.Equal(t, "unauthorized", eb.Error.Code)
			require.NotContains(t, eb.Error.Message, testSecret)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Bearer")
		}
	}
	for _, rt := range routes {
		req, err := http.NewRequestWithContext(testCtx(t), rt.method, base+rt.path, strings.NewReader(rt.body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		resp, err := authed.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s with the secret", rt.method, rt.path)
	}
}

// TestOrphanGrace: a worker whose node keeps accepting its heartbeats lives
// on past the grace; once the node refuses them (401: another node on the
// address) the worker stops itself after the grace, ending an in-flight
// stream with an error event, and Err says why.
func TestOrphanGrace(t *testing.T) {
	const grace = 400 * time.Millisecond
	node := newNodeRecorder(t)
	g := newGate()
	defer g.open()
	cfg := testConfig(t)
	cfg.NodeURL = node.srv.URL
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.OrphanGrace = grace
	cfg.DrainTimeout = 200 * time.Millisecond
	cfg.Load = g.load(testLoad)
	s, base := startServer(t, cfg)
	port := s.Addr().(*net.TCPAddr).Port

	// Accepted beats over three graces: still serving.
	start := time.Now()
	require.Eventually(t, func() bool { return time.Since(start) > 3*grace && len(node.all()) > 3 }, reqTimeout, 5*time.Millisecond)
	select {
	case <-s.Done():
		t.Fatalf("stopped although its node accepts its heartbeats: %v", s.Err())
	default:
	}
	require.NoError(t, s.Err())

	// A generation in flight, then the node refuses the worker.
	resp := recvResp(t, asyncPost(t, testCtx(t), base+"/v1/infer", map[string]any{"prompt": "Once upon a time", "max_tokens": 50}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	g.waitEntered(t, 1)
	node.setStatus(http.StatusUnauthorized)
	refusedAt := time.Now()
	select {
	case <-s.Done():
	case <-time.After(reqTimeout):
		t.Fatal("a worker whose node refuses it did not stop")
	}
	require.GreaterOrEqual(t, time.Since(refusedAt), grace-2*cfg.HeartbeatInterval, "stopped before the grace was over")
	require.ErrorIs(t, s.Err(), ErrOrphaned)
	require.Equal(t, StateStopped, s.State())
	st := parseInfer(t, readAllSSE(t, resp.Body))
	require.NotNil(t, st.Err, "the in-flight stream ends with an error event: %v", st.Order)
	require.Equal(t, "draining", st.Err.Code)
	_, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	require.Error(t, err, "the port is closed")
}

// TestOrphanNodeGone: with nobody listening at the node's address the
// worker stops after the grace; with a grace of 0 it never does.
func TestOrphanNodeGone(t *testing.T) {
	for _, grace := range []time.Duration{300 * time.Millisecond, 0} {
		node := newNodeRecorder(t)
		node.srv.Close()
		cfg := testConfig(t)
		cfg.NodeURL = node.srv.URL
		cfg.HeartbeatInterval = 20 * time.Millisecond
		cfg.OrphanGrace = grace
		s, _ := startServer(t, cfg)
		if grace == 0 {
			// Heartbeats keep failing for many heartbeat intervals.
			start := time.Now()
			require.Eventually(t, func() bool { return time.Since(start) > time.Second }, reqTimeout, 50*time.Millisecond)
			select {
			case <-s.Done():
				t.Fatal("a worker with orphan grace 0 stopped itself")
			default:
			}
			continue
		}
		select {
		case <-s.Done():
		case <-time.After(reqTimeout):
			t.Fatal("a worker without its node did not stop")
		}
		require.ErrorIs(t, s.Err(), ErrOrphaned)
	}
}

// TestHeartbeatsFollowTheNode: the node restarted on another port (its
// node.json, NodeFile, says where): the worker's beats go there, and it
// does not stop at the grace as an orphan.
func TestHeartbeatsFollowTheNode(t *testing.T) {
	const grace = 300 * time.Millisecond
	old, moved := newNodeRecorder(t), newNodeRecorder(t)
	old.srv.Close()
	file := filepath.Join(t.TempDir(), "node.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"id":"n1","api_url":"`+moved.srv.URL+`"}`), 0o600))
	cfg := testConfig(t)
	cfg.NodeURL, cfg.NodeFile = old.srv.URL, file
	cfg.HeartbeatInterval = 20 * time.Millisecond
	cfg.OrphanGrace = grace
	s, _ := startServer(t, cfg)
	start := time.Now()
	require.Eventually(t, func() bool { return time.Since(start) > 3*grace && len(moved.all()) > 3 }, reqTimeout, 5*time.Millisecond)
	select {
	case <-s.Done():
		t.Fatalf("stopped although its node accepts its heartbeats at its new address: %v", s.Err())
	default:
	}
}

// TestHeldBackBodyIsCut: a client that sends a request's headers and then
// holds back its body (with or without the secret, a length or chunks)
// has its connection closed after BodyTimeout; before, net/http waited for
// the rest of the body for ever, even after answering 401.
func TestHeldBackBodyIsCut(t *testing.T) {
	cfg := testConfig(t)
	cfg.BodyTimeout = 300 * time.Millisecond
	s, _ := startServer(t, cfg)
	tests := []struct {
		name, auth, framing, body string
	}{
		{"no secret, length", "", "Content-Length: 1000", "{"},
		{"no secret, chunked", "", "Transfer-Encoding: chunked", "1\r\n{\r\n"},
		{"secret, length", "Authorization: Bearer " + testSecret + "\r\n", "Content-Length: 1000", `{"messages":`},
		{"secret, chunked", "Authorization: Bearer " + testSecret + "\r\n", "Transfer-Encoding: chunked", "1\r\n{\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", s.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + tc.auth +
				"Content-Type: application/json\r\n" + tc.framing + "\r\n\r\n" + tc.body))
			require.NoError(t, err)
			// The server closes it: reading meets the end, not the
			// client's own deadline.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.Copy(io.Discard, conn)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("a held-back body kept its connection open")
			}
		})
	}
}

// TestStrangerConnectionClosed: a connection whose request was refused
// (401) is closed after the answer, so a local process without the secret
// cannot hold idle connections to the worker; the node's stay open for the
// next request.
func TestStrangerConnectionClosed(t *testing.T) {
	s, _ := startServer(t, testConfig(t))
	tests := []struct {
		name, auth string
		keep       bool
	}{
		{"no secret", "", false},
		{"wrong secret", "Authorization: Bearer wrong-secret-0123456789\r\n", false},
		{"secret", "Authorization: Bearer " + testSecret + "\r\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", s.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			br := bufio.NewReader(conn)
			for i := range 2 {
				_, err = conn.Write([]byte("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + tc.auth + "\r\n"))
				if i == 1 && !tc.keep {
					break // the write may still succeed; the read below tells
				}
				require.NoError(t, err)
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(br, nil)
				require.NoError(t, err)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				require.Equal(t, tc.keep, resp.StatusCode == http.StatusOK)
			}
			if tc.keep {
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = br.ReadByte()
			// Closed: an EOF, or a reset when the second request reached
			// the closed socket first.
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET),
				"a refused client's connection stayed open: %v", err)
		})
	}
}
