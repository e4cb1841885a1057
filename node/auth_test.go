package node_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/node/tlsca"
)

// apiCall sends one request to n's API and returns the status and the
// error code of the answer ("" for a 2xx).
func apiCall(t *testing.T, n *node.Node, method, path, token, ctype, body string, hdr map[string]string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, n.URL()+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e node.APIError
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e.Error.Code, data
}

func jobCount(n *node.Node) int { return len(n.Jobs().List()) }

// TestLoopbackIsNotRoot: a local client without a credential may read and
// run inference; every operation that downloads, runs, changes or reveals
// secrets needs the admin key, and the cluster secret is no credential on
// loopback. A refused request starts no job. Off loopback, only an API
// key is a credential.
func TestLoopbackIsNotRoot(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	admin := n.AdminKey()
	require.True(t, strings.HasPrefix(admin, "rbeeadm_"))
	// The key is in the data dir, readable by the node's user only.
	fi, err := os.Stat(filepath.Join(n.DataDir(), "admin.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	k, err := node.ReadAdminKey(n.DataDir())
	require.NoError(t, err)
	require.Equal(t, admin, k)

	adminOps := []string{
		`{"operation":"worker_spawn","model":"builtin:stories260k"}`,
		`{"operation":"worker_download","type":"cpu"}`,
		`{"operation":"worker_build","type":"cpu"}`,
		`{"operation":"model_download","model":"/etc/shadow"}`,
		`{"operation":"model_delete","id":"x"}`,
		`{"operation":"hive_import_ssh","ssh_config":"/tmp/x"}`,
		`{"operation":"active_worker_retire","worker_id":"w-1"}`,
		`{"operation":"node_leave"}`,
		`{"operation":"worker_process_delete","pid":1}`,
		`{"operation":"worker_binary_delete","type":"cpu","version":"v1"}`,
	}
	before := jobCount(n)
	for _, tok := range []string{"", "sk-whatever-openai-clients-send", nodetest.Token} {
		for _, body := range adminOps {
			st, code, data := apiCall(t, n, "POST", "/v1/jobs", tok, "application/json", body, nil)
			require.Equal(t, 403, st, "%s with %q: %s", body, tok, data)
			require.Equal(t, "forbidden", code)
			require.Contains(t, string(data), "admin")
		}
		for _, p := range []string{"/v1/join", "/v1/leave"} {
			st, _, _ := apiCall(t, n, "POST", p, tok, "application/json", `{"addrs":["127.0.0.1:1"]}`, nil)
			require.Equal(t, 403, st, p)
		}
		// Reads and inference-side routes answer.
		st, _, data := apiCall(t, n, "POST", "/v1/jobs", tok, "application/json", `{"operation":"status"}`, nil)
		require.Equal(t, 202, st, string(data))
		for _, p := range []string{"/v1/cluster", "/v1/models", "/api/tags", "/metrics", "/v1/jobs"} {
			st, _, data := apiCall(t, n, "GET", p, tok, "", "", nil)
			require.Equal(t, 200, st, "%s: %s", p, data)
		}
	}
	require.Equal(t, before+3, jobCount(n), "only the three status jobs may exist")
	// The token route is gone.
	st, _, _ := apiCall(t, n, "GET", "/v1/token", "", "", "", nil)
	require.Equal(t, 404, st)
	st, _, _ = apiCall(t, n, "GET", "/v1/token", admin, "", "", nil)
	require.Equal(t, 404, st)
	// The admin key may do what the others may not.
	st, _, data := apiCall(t, n, "POST", "/v1/jobs", admin, "application/json", `{"operation":"model_delete","id":"none"}`, nil)
	require.Equal(t, 202, st, string(data))

	// Off loopback only API keys are credentials: no credential, the
	// local admin key and the cluster secret get 401 (the rest of the
	// table, and the limit on failed attempts, are node/auth's tests).
	const job = `{"operation":"status"}`
	require.Equal(t, 401, offLoopback(n, "192.0.2.7:5000", "POST", "/v1/jobs", "", job))
	require.Equal(t, 401, offLoopback(n, "192.0.2.7:5000", "POST", "/v1/jobs", admin, job), "the local admin key is for loopback only")
	require.Equal(t, 401, offLoopback(n, "192.0.2.8:5000", "GET", "/v1/models", nodetest.Token, ""), "the cluster secret is no API credential")
	key := createKey(t, n, "ops", "admin")
	require.Equal(t, 202, offLoopback(n, "192.0.2.9:5000", "POST", "/v1/jobs", key, job))
}

// TestJobsArePrivate: a local client sees the jobs it created and not the
// admin's; the admin sees all. Another user's process sees none of ours.
func TestJobsArePrivate(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	admin := n.AdminKey()
	submit := func(tok string) string {
		st, _, data := apiCall(t, n, "POST", "/v1/jobs", tok, "application/json", `{"operation":"status"}`, nil)
		require.Equal(t, 202, st, string(data))
		var out struct {
			JobID string `json:"job_id"`
		}
		require.NoError(t, json.Unmarshal(data, &out))
		return out.JobID
	}
	list := func(tok string) []string {
		st, _, data := apiCall(t, n, "GET", "/v1/jobs", tok, "", "", nil)
		require.Equal(t, 200, st)
		var out struct {
			Jobs []struct {
				ID string `json:"job_id"`
			} `json:"jobs"`
		}
		require.NoError(t, json.Unmarshal(data, &out))
		var ids []string
		for _, j := range out.Jobs {
			ids = append(ids, j.ID)
		}
		return ids
	}
	adminJob := submit(admin)
	mine := submit("")
	require.ElementsMatch(t, []string{mine}, list(""), "a local client lists only its own jobs")
	require.Subset(t, list(admin), []string{adminJob, mine})
	// The cluster snapshot (the web page's feed) lists jobs the same way.
	snapshotJobs := func(tok string) string {
		st, _, data := apiCall(t, n, "GET", "/v1/cluster", tok, "", "", nil)
		require.Equal(t, 200, st)
		var out struct {
			Jobs json.RawMessage `json:"jobs"`
		}
		require.NoError(t, json.Unmarshal(data, &out))
		return string(out.Jobs)
	}
	require.Contains(t, snapshotJobs(""), mine)
	require.NotContains(t, snapshotJobs(""), adminJob, "another principal's job is not in the snapshot")
	require.Contains(t, snapshotJobs(admin), adminJob)
	for _, p := range []string{"/v1/jobs/" + adminJob, "/v1/jobs/" + adminJob + "/events"} {
		st, _, _ := apiCall(t, n, "GET", p, "", "", "", nil)
		require.Equal(t, 404, st, "another principal's job must look absent: %s", p)
	}
	st, _, _ := apiCall(t, n, "DELETE", "/v1/jobs/"+adminJob, "", "", "", nil)
	require.Equal(t, 404, st)
	st, _, _ = apiCall(t, n, "GET", "/v1/jobs/"+mine, "", "", "", nil)
	require.Equal(t, 200, st)
	st, _, _ = apiCall(t, n, "GET", "/v1/jobs/"+mine+"/events", admin, "", "", nil)
	require.Equal(t, 200, st)
	// Cancelling a job that has ended says how it ended, not "cancelling".
	require.Eventually(t, func() bool {
		_, _, data := apiCall(t, n, "GET", "/v1/jobs/"+mine, "", "", "", nil)
		return strings.Contains(string(data), `"status":"ok"`)
	}, 10*time.Second, 20*time.Millisecond)
	st, _, data := apiCall(t, n, "DELETE", "/v1/jobs/"+mine, "", "", "", nil)
	require.Equal(t, 200, st)
	require.JSONEq(t, `{"status":"ok"}`, string(data))

	// A process of another user (nobody) lists nothing of ours, cannot
	// read our job, and its own job is not ours.
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Log("not root on Linux: the other-user part needs a process started as nobody")
		return
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Log("no curl: skipping the other-user part")
		return
	}
	asNobody := func(args ...string) string {
		cmd := exec.Command(curl, append([]string{"-sS"}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		require.NoError(t, err)
		return string(out)
	}
	out := asNobody(n.URL() + "/v1/jobs")
	require.NotContains(t, out, mine)
	require.NotContains(t, out, adminJob)
	out = asNobody(n.URL() + "/v1/cluster")
	require.Contains(t, out, `"jobs"`)
	require.NotContains(t, out, mine)
	require.NotContains(t, out, adminJob)
	out = asNobody("-o", "/dev/null", "-w", "%{http_code}", n.URL()+"/v1/jobs/"+mine+"/events")
	require.Equal(t, "404", out)
	out = asNobody("--json", `{"operation":"status"}`, n.URL()+"/v1/jobs")
	var sub struct {
		JobID string `json:"job_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &sub), out)
	require.NotContains(t, list(""), sub.JobID, "nobody's job is not root's")
	require.Contains(t, asNobody(n.URL()+"/v1/jobs"), sub.JobID)
	// nobody cannot read the admin key.
	out = asNobody("-o", "/dev/null", "-w", "%{http_code}", "--json", `{"operation":"worker_spawn","model":"builtin:stories260k"}`, n.URL()+"/v1/jobs")
	require.Equal(t, "403", out)
}

// TestBrowserAttacksRefused: a foreign Host (DNS rebinding), a foreign
// Origin and a form content type are refused by a real node, and nothing
// runs. The whole table of the checks is node/auth's TestBrowserDefences;
// this keeps one request of each kind through the node's listener, with
// its --allowed-host and --cors-origin flags.
func TestBrowserAttacksRefused(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.AllowedHosts = []string{"rbee.lan"}
		cfg.CORSOrigins = []string{"http://chat.lan:3000"}
	})
	n := c.Nodes[0]
	admin := n.AdminKey()
	port := n.HTTPAddr()[strings.LastIndex(n.HTTPAddr(), ":")+1:]
	before := jobCount(n)
	cases := []struct {
		name   string
		path   string
		ctype  string
		hdr    map[string]string
		status int
	}{
		{"rebinding host", "/v1/jobs", "application/json", map[string]string{"Host": "evil.example:" + port}, 403},
		{"rebinding host, cluster state", "/v1/cluster", "", map[string]string{"Host": "evil.example:" + port}, 403},
		{"foreign origin", "/v1/jobs", "application/json", map[string]string{"Origin": "https://evil.example"}, 403},
		{"form", "/v1/jobs", "application/x-www-form-urlencoded", nil, 415},
		{"text/plain chat", "/v1/chat/completions", "text/plain", nil, 415},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			body := `{"operation":"status"}`
			if tc.path == "/v1/cluster" {
				method, body = "GET", ""
			}
			// Even with the admin key: a browser may carry one.
			st, _, data := apiCall(t, n, method, tc.path, admin, tc.ctype, body, tc.hdr)
			require.Equal(t, tc.status, st, string(data))
		})
	}
	require.Equal(t, before, jobCount(n), "a refused request ran a job")
	// Allowed: the node's own origin, --cors-origin, --allowed-host,
	// localhost names, and /health from anywhere.
	ok := []map[string]string{
		{"Origin": n.URL()},
		{"Origin": "http://chat.lan:3000"},
		{"Host": "rbee.lan:" + port},
	}
	for _, h := range ok {
		st, _, data := apiCall(t, n, "POST", "/v1/jobs", admin, "application/json", `{"operation":"status"}`, h)
		require.Equal(t, 202, st, "%v: %s", h, data)
	}
	st, _, _ := apiCall(t, n, "GET", "/health", "", "", "", map[string]string{"Host": "evil.example"})
	require.Equal(t, 200, st)

	// A CORS preflight from an allowed origin is answered; from another
	// origin it is refused; an allowed cross-origin answer names the origin.
	req, _ := http.NewRequest("OPTIONS", n.URL()+"/v1/chat/completions", nil)
	req.Header.Set("Origin", "http://chat.lan:3000")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 204, resp.StatusCode)
	require.Equal(t, "http://chat.lan:3000", resp.Header.Get("Access-Control-Allow-Origin"))
	require.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")
	req.Header.Set("Origin", "https://evil.example")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 403, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
	req, _ = http.NewRequest("GET", n.URL()+"/v1/models", nil)
	req.Header.Set("Origin", "http://chat.lan:3000")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "http://chat.lan:3000", resp.Header.Get("Access-Control-Allow-Origin"))
}

// offLoopback drives n's handler with a request from a LAN address (no
// traffic leaves the process) and returns the status.
func offLoopback(n *node.Node, addr, method, path, tok, body string) int {
	code, _ := offLoopbackBody(n, addr, method, path, tok, body)
	return code
}

// offLoopbackBody is offLoopback with the answer's body.
func offLoopbackBody(n *node.Node, addr, method, path, tok, body string) (int, string) {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = addr
	r.Host = "127.0.0.1"
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	w := httptest.NewRecorder()
	n.Handler().ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

// createKey makes an API key through n's API with the admin key.
func createKey(t *testing.T, n *node.Node, name, scope string) string {
	t.Helper()
	var res api.APIKeyCreated
	run(t, n, map[string]any{"operation": "apikey_create", "name": name, "scope": scope}, &res)
	require.Equal(t, name, res.Name)
	require.True(t, strings.HasPrefix(res.Key, "rbk_"), res.Key)
	return res.Key
}

// TestAPIKeys: scoped keys are created on one node and work on another;
// a call outside its scope gets 403 naming the scope it needs; the
// registry holds no key; a revoked key is refused on both nodes within 2 s.
func TestAPIKeys(t *testing.T) {
	c := nodetest.New(t, 2)
	n0, n1 := c.Nodes[0], c.Nodes[1]
	inf := createKey(t, n0, "webui", "inference")
	read := createKey(t, n0, "prometheus", "read")
	for _, k := range n1.Registry().APIKeys() {
		require.NotEqual(t, inf, k.Hash)
		require.Len(t, k.Hash, 64)
	}
	const lan = "192.0.2.20:4000"
	require.Eventually(t, func() bool { return len(n1.Registry().APIKeys()) == 2 }, nodetest.WaitTimeout, 20*time.Millisecond)
	require.Equal(t, 200, offLoopback(n1, lan, "GET", "/v1/models", inf, ""))
	require.Equal(t, 200, offLoopback(n1, lan, "GET", "/api/tags", inf, ""))
	// The Ollama model routes: show is a read, embed inference, pull and
	// delete (model_download, model_delete) admin (every route's
	// permission: TestRoutePerm).
	for _, tc := range []struct {
		method, path, key string
		want              int
	}{
		{"POST", "/api/show", read, 404}, // allowed; no such model
		{"POST", "/api/embed", inf, 400}, // allowed; no input
		{"POST", "/v1/embeddings", read, 403},
		{"POST", "/api/pull", inf, 403},
		{"DELETE", "/api/delete", read, 403},
	} {
		require.Equal(t, tc.want, offLoopback(n1, lan, tc.method, tc.path, tc.key, `{"model":"none"}`), "%s %s", tc.method, tc.path)
	}
	require.Equal(t, 403, offLoopback(n1, lan, "POST", "/v1/jobs", inf, `{"operation":"status"}`))
	require.Equal(t, 403, offLoopback(n1, lan, "GET", "/metrics", inf, ""))
	require.Equal(t, 403, offLoopback(n1, lan, "POST", "/v1/jobs", inf, `{"operation":"worker_spawn","model":"builtin:stories260k"}`))
	require.Equal(t, 200, offLoopback(n1, lan, "GET", "/metrics", read, ""))
	require.Equal(t, 202, offLoopback(n1, lan, "POST", "/v1/jobs", read, `{"operation":"status"}`))
	// An inference key follows the infer job it submitted (the CLI's
	// `rbee infer`), and sees no one else's jobs.
	st, body := offLoopbackBody(n1, lan, "POST", "/v1/jobs", inf, `{"operation":"infer","model":"no-such-model","prompt":"x"}`)
	require.Equal(t, 202, st, body)
	var sub struct {
		JobID string `json:"job_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &sub))
	st, body = offLoopbackBody(n1, lan, "GET", "/v1/jobs/"+sub.JobID+"/events", inf, "")
	require.Equal(t, 200, st, body)
	require.Contains(t, body, "event: done")
	st, body = offLoopbackBody(n1, lan, "GET", "/v1/jobs", inf, "")
	require.Equal(t, 200, st)
	require.Contains(t, body, sub.JobID)
	require.Equal(t, 404, offLoopback(n1, lan, "GET", "/v1/jobs/"+sub.JobID, read, ""), "another key's job")
	require.Equal(t, 403, offLoopback(n1, lan, "POST", "/v1/chat/completions", read, `{"model":"x","messages":[]}`))
	// The 403 names the scope needed.
	st, code, data := apiCall(t, n1, "POST", "/v1/jobs", read, "application/json", `{"operation":"apikey_create","name":"x","scope":"admin"}`, nil)
	require.Equal(t, 403, st)
	require.Equal(t, "forbidden", code)
	require.Contains(t, string(data), "admin")
	st, body = offLoopbackBody(n1, lan, "POST", "/v1/chat/completions", read, `{"model":"x","messages":[]}`)
	require.Equal(t, 403, st)
	require.Contains(t, body, "inference")
	// On loopback a key gives no less than no key: the read key reaches
	// the model lookup (no model x: 404) as no key would.
	st, _, _ = apiCall(t, n1, "POST", "/v1/chat/completions", read, "application/json", `{"model":"x","messages":[]}`, nil)
	require.Equal(t, 404, st)

	// Creating the same name again conflicts; bad names and scopes are
	// refused before a job exists.
	st, _, _ = apiCall(t, n0, "POST", "/v1/jobs", n0.AdminKey(), "application/json", `{"operation":"apikey_create","name":"webui","scope":"read"}`, nil)
	require.Equal(t, 202, st) // the job runs and fails with conflict
	for _, body := range []string{`{"operation":"apikey_create","name":"a b","scope":"read"}`, `{"operation":"apikey_create","name":"x","scope":"root"}`} {
		st, code, data := apiCall(t, n0, "POST", "/v1/jobs", n0.AdminKey(), "application/json", body, nil)
		require.Equal(t, 400, st, body)
		require.Equal(t, "bad_request", code)
		require.NotContains(t, string(data), "fsm:", "the registry's prefix says nothing to a user")
	}
	// The name exists on this replica: conflict before a registry write.
	je := runErr(t, n0, map[string]any{"operation": "apikey_create", "name": "webui", "scope": "read"})
	require.Equal(t, "conflict", je.Code)

	// Last used shows on every node: the keys were used on n1 only, and n0
	// learns it from n1's gossip.
	for _, n := range []*node.Node{n1, n0} {
		require.Eventually(t, func() bool {
			var list struct {
				Keys []api.APIKeyView `json:"keys"`
			}
			run(t, n, map[string]any{"operation": "apikey_list"}, &list)
			if len(list.Keys) != 2 {
				return false
			}
			for _, k := range list.Keys {
				if k.LastUsed == nil {
					return false
				}
			}
			return true
		}, nodetest.WaitTimeout, 100*time.Millisecond, "last used on %s", n.Name())
	}

	// Revoke on n1: refused on both within 2 s.
	run(t, n1, map[string]any{"operation": "apikey_revoke", "name": "webui"}, nil)
	require.Eventually(t, func() bool {
		return offLoopback(n0, lan, "GET", "/v1/models", inf, "") == 401 && offLoopback(n1, lan, "GET", "/v1/models", inf, "") == 401
	}, 2*time.Second, 10*time.Millisecond)
	require.Equal(t, 200, offLoopback(n0, lan, "GET", "/metrics", read, ""), "the other key still works")
}

// TestBoundedConnections: a trickled body is cut after the body timeout, an
// idle keep-alive connection after the idle timeout, a stream outlives
// both, and connections per address are capped, over the HTTP and the
// HTTPS listener together.
func TestBoundedConnections(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.HTTPBodyTimeout = 500 * time.Millisecond
		cfg.HTTPIdleTimeout = 700 * time.Millisecond
		cfg.MaxConnsPerClient = 8
		cfg.HTTPSAddr = "127.0.0.1:0"
	})
	n := c.Nodes[0]
	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn)
		return err == nil // EOF: the server closed it; a timeout is an error
	}

	// A trickled body: headers promise 1000 bytes, 10 arrive.
	conn, err := net.Dial("tcp", n.HTTPAddr())
	require.NoError(t, err)
	fmt.Fprintf(conn, "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"operatio")
	require.True(t, closedWithin(conn, 10*time.Second), "a trickled body kept its connection")
	conn.Close()

	// An idle keep-alive connection.
	conn, err = net.Dial("tcp", n.HTTPAddr())
	require.NoError(t, err)
	fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.True(t, closedWithin(conn, 10*time.Second), "an idle connection stayed open")
	conn.Close()

	// A stream (the cluster feed, SSE) lives on past both timeouts: after
	// the first event, a read waits out its own deadline (timeout), never
	// meeting the end of the connection.
	stream, err := net.Dial("tcp", n.HTTPAddr())
	require.NoError(t, err)
	defer stream.Close()
	fmt.Fprintf(stream, "GET /v1/cluster/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	sr := bufio.NewReader(stream)
	sresp, err := http.ReadResponse(sr, nil)
	require.NoError(t, err)
	require.Equal(t, 200, sresp.StatusCode)
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		_ = stream.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := sr.ReadByte()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			continue
		}
		require.NoError(t, err, "the stream was cut")
	}

	// Connections per address: 8 are held, the 9th is answered 429.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// The open stream holds one slot already; seven more streams, each
	// counted once its answer arrives (a loopback connection is counted
	// on its first read, in its own goroutine).
	for i := 0; i < 7; i++ {
		c, err := net.Dial("tcp", n.HTTPAddr())
		require.NoError(t, err)
		held = append(held, c)
		fmt.Fprintf(c, "GET /v1/cluster/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode)
	}
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", n.HTTPAddr())
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return bytes.Contains(b, []byte("429 Too Many Requests"))
	}, 10*time.Second, 50*time.Millisecond)
	// The HTTPS listener counts the same slots: it closes the connection
	// (a TLS client could not read a plain 429).
	waitCert(t, n)
	_, err = handshake(t, n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", caPool(t, n), nil))
	require.Error(t, err, "a connection over the cap got through the HTTPS listener")
	held[0].Close()
	require.Eventually(t, func() bool {
		_, err := handshake(t, n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", caPool(t, n), nil))
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "a freed slot serves HTTPS")

	// On loopback each local user has a cap of their own: another user
	// (nobody) at its cap locks nobody else out.
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Log("not root on Linux: the other-user part needs a process started as nobody")
		return
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	stream.Close()
	_, port, err := net.SplitHostPort(n.HTTPAddr())
	require.NoError(t, err)
	// Eight streams (each counted once it is answered), then a ninth
	// connection that must be refused; then hold.
	script := `for i in 1 2 3 4 5 6 7 8; do exec {fd}<>/dev/tcp/127.0.0.1/` + port + `
printf 'GET /v1/cluster/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' >&$fd; timeout 5 head -c 12 <&$fd >/dev/null; done
exec {ninth}<>/dev/tcp/127.0.0.1/` + port + `; timeout 5 head -c 12 <&$ninth; echo; sleep 20`
	cmd := exec.Command("bash", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Contains(t, line, "429", "nobody's ninth connection is over its cap")
	st, _, data := apiCall(t, n, "GET", "/health", "", "", "", nil)
	require.Equal(t, 200, st, "this user still gets in: %s", data)
}

// TestSecretStaysPrivate: the join command carries the secret in the
// environment, not argv; a secret file others can read is refused at start.
func TestSecretStaysPrivate(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	join := n.JoinCommand()
	require.True(t, strings.HasPrefix(join, node.ClusterTokenEnv+"="+nodetest.Token+" rbee node --join "), join)
	require.NotContains(t, join, "--token")

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.secret"), []byte(nodetest.Token+"\n"), 0o644))
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.MDNS = "loose", dir, false
	cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	n2, err := node.New(cfg)
	require.NoError(t, err)
	err = n2.Start(context.Background())
	require.ErrorIs(t, err, node.ErrInsecureSecretFile)
	require.Contains(t, err.Error(), "0600")
	_ = n2.Close()
}

// TestRefusedOperationTellsNothing: a caller who may not submit an
// operation gets the same 403 whatever its fields name. The operation's
// checks stat files and look up hosts as the node's user, so running them
// first told another local user or a read key which files exist and are
// executable anywhere the node's user can see.
func TestRefusedOperationTellsNothing(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	read := createKey(t, n, "reader", "read")
	inf := createKey(t, n, "chat", "inference")
	dir := t.TempDir()
	exe := filepath.Join(dir, "llama-server")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755))
	plain := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(plain, []byte("x"), 0o600))
	bodies := []string{
		`{"operation":"worker_binary_add","type":"llama-server","path":"` + exe + `"}`,
		`{"operation":"worker_binary_add","type":"llama-server","path":"` + plain + `"}`,
		`{"operation":"worker_binary_add","type":"llama-server","path":"` + filepath.Join(dir, "missing") + `"}`,
		`{"operation":"ssh_test","name":"no-such-host"}`,
		`{"operation":"hive_refresh_capabilities","hive":"no-such-hive"}`,
		`{"operation":"worker_spawn","hive":"no-such-hive","model":"builtin:stories260k"}`,
	}
	callers := []struct {
		name string
		call func(body string) (int, string)
	}{
		{"local user without a key", func(body string) (int, string) {
			st, _, data := apiCall(t, n, "POST", "/v1/jobs", "", "application/json", body, nil)
			return st, string(data)
		}},
		{"read key off loopback", func(body string) (int, string) {
			return offLoopbackBody(n, "192.0.2.30:4000", "POST", "/v1/jobs", read, body)
		}},
		{"inference key off loopback", func(body string) (int, string) {
			return offLoopbackBody(n, "192.0.2.31:4000", "POST", "/v1/jobs", inf, body)
		}},
	}
	before := jobCount(n)
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			for _, body := range bodies {
				st, data := c.call(body)
				require.Equal(t, 403, st, "%s: %s", body, data)
				require.Contains(t, data, `"forbidden"`)
				require.NotContains(t, data, dir, "the answer names the file")
				require.NotContains(t, data, "no-such", "the answer looked the name up")
			}
		})
	}
	require.Equal(t, before, jobCount(n), "a refused request ran a job")
}

// TestReissuedKeyNameSeesNoOldJobs: a key created under the name of a
// revoked key (the usual rotation of a leaked key) is another principal:
// it neither lists, reads, follows nor cancels the old key's jobs.
func TestReissuedKeyNameSeesNoOldJobs(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	const lan = "192.0.2.40:4000"
	old := createKey(t, n, "webui", "inference")
	st, body := offLoopbackBody(n, lan, "POST", "/v1/jobs", old, `{"operation":"infer","model":"no-such-model","prompt":"the old holder's prompt"}`)
	require.Equal(t, 202, st, body)
	var sub struct {
		JobID string `json:"job_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &sub))
	run(t, n, map[string]any{"operation": "apikey_revoke", "name": "webui"}, nil)
	reissued := createKey(t, n, "webui", "inference")
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v1/jobs/" + sub.JobID, 404},
		{"GET", "/v1/jobs/" + sub.JobID + "/events", 404},
		{"DELETE", "/v1/jobs/" + sub.JobID, 404},
	} {
		st, body := offLoopbackBody(n, lan, tc.method, tc.path, reissued, "")
		require.Equal(t, tc.want, st, "%s %s: %s", tc.method, tc.path, body)
	}
	st, body = offLoopbackBody(n, lan, "GET", "/v1/jobs", reissued, "")
	require.Equal(t, 200, st, body)
	require.NotContains(t, body, sub.JobID, "the new key lists the revoked key's job")
	// The new key still sees its own.
	st, body = offLoopbackBody(n, lan, "POST", "/v1/jobs", reissued, `{"operation":"infer","model":"no-such-model","prompt":"x"}`)
	require.Equal(t, 202, st, body)
	require.NoError(t, json.Unmarshal([]byte(body), &sub))
	st, body = offLoopbackBody(n, lan, "GET", "/v1/jobs", reissued, "")
	require.Equal(t, 200, st, body)
	require.Contains(t, body, sub.JobID)
}

// TestRevokedKeyStreamsEnd: an answer still streaming to an API key (the
// cluster feed, which never ends by itself) ends within a couple of
// seconds of the key's revocation on another node, as its next request
// is refused; another key's stream goes on.
func TestRevokedKeyStreamsEnd(t *testing.T) {
	c := nodetest.New(t, 2)
	n0, n1 := c.Nodes[0], c.Nodes[1]
	revoked := createKey(t, n0, "dashboard", "read")
	kept := createKey(t, n0, "prometheus", "read")
	require.Eventually(t, func() bool { return len(n1.Registry().APIKeys()) == 2 }, nodetest.WaitTimeout, 20*time.Millisecond)
	stream := func(key string) (ended <-chan struct{}, stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		r := httptest.NewRequest("GET", "/v1/cluster/events", nil).WithContext(ctx)
		r.RemoteAddr, r.Host = "192.0.2.50:4000", "127.0.0.1"
		r.Header.Set("Authorization", "Bearer "+key)
		done := make(chan struct{})
		go func() {
			defer close(done)
			n1.Handler().ServeHTTP(httptest.NewRecorder(), r)
		}()
		t.Cleanup(func() { cancel(); <-done })
		return done, cancel
	}
	revokedEnded, _ := stream(revoked)
	keptEnded, _ := stream(kept)
	// Both streams are open (the feed sends its first state at once).
	select {
	case <-revokedEnded:
		t.Fatal("the stream ended before the revocation")
	case <-time.After(300 * time.Millisecond):
	}
	run(t, n0, map[string]any{"operation": "apikey_revoke", "name": "dashboard"}, nil)
	require.Eventually(t, func() bool {
		select {
		case <-revokedEnded:
			return true
		default:
			return false
		}
	}, nodetest.WaitTimeout, 20*time.Millisecond, "the revoked key's stream goes on")
	select {
	case <-keptEnded:
		t.Fatal("another key's stream ended")
	default:
	}
	require.Equal(t, 401, offLoopback(n1, "192.0.2.50:4000", "GET", "/v1/cluster", revoked, ""))
}

// TestHealthTellsRebindingNothing: /health answers every Host (a proxy's
// probe), but a page that rebound its own name to this machine learns
// only that the node is up: not its name, id, version or data dir (which
// names the user). The node's own names get the whole answer.
func TestHealthTellsRebindingNothing(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	port := n.HTTPAddr()[strings.LastIndex(n.HTTPAddr(), ":")+1:]
	for _, tc := range []struct {
		host string
		full bool
	}{
		{"evil.example:" + port, false},
		{"attacker.test", false},
		{"127.0.0.1:" + port, true},
		{"localhost:" + port, true},
	} {
		st, _, data := apiCall(t, n, "GET", "/health", "", "", "", map[string]string{"Host": tc.host})
		require.Equal(t, 200, st, tc.host)
		var out map[string]any
		require.NoError(t, json.Unmarshal(data, &out))
		require.Equal(t, "ok", out["status"], tc.host)
		if tc.full {
			require.Equal(t, n.Name(), out["node"], tc.host)
			require.NotEmpty(t, out["data_dir"], tc.host)
			continue
		}
		require.Equal(t, map[string]any{"status": "ok"}, out, "%s: %s", tc.host, data)
		require.NotContains(t, string(data), n.DataDir())
	}
}

// TestStalledReaderIsCut: a client that stops reading (pipelined requests
// whose answers fill the socket buffers, as a stream would) has its
// connection closed once a write makes no progress for the stall timeout,
// on the HTTP and the HTTPS listener: before, the write waited for ever,
// holding the handler, the connection's slot of its client's cap (and a
// stream's worker slot).
func TestStalledReaderIsCut(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.HTTPStallTimeout = 500 * time.Millisecond
		cfg.MaxConnsPerClient = 1
		cfg.HTTPSAddr = "127.0.0.1:0"
	})
	n := c.Nodes[0]
	waitCert(t, n)
	tlsDial := func() (net.Conn, error) {
		return tls.Dial("tcp", n.HTTPSAddr(), tlsca.ClientConfig("127.0.0.1", caPool(t, n), nil))
	}
	tests := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"http", func() (net.Conn, error) { return net.Dial("tcp", n.HTTPAddr()) }},
		{"https", tlsDial},
	}
	// about 8 MiB of answers (the web page, 5 KiB each): more than the
	// kernel buffers of both ends hold
	const requests = 1600
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The stalled connection: its first answer arrived, so it holds
			// the one slot of this client (the previous case's last
			// connection may hold it for a moment still).
			var conn net.Conn
			require.Eventually(t, func() bool {
				c, err := tc.dial()
				if err != nil {
					return false
				}
				if tcp, ok := c.(*net.TCPConn); ok {
					_ = tcp.SetReadBuffer(4096)
				}
				// Written in the background: the server stops reading
				// requests once its answers no longer go out.
				go func() {
					req := []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
					_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
					for range requests {
						if _, err := c.Write(req); err != nil {
							return
						}
					}
				}()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				head := make([]byte, 12)
				if _, err := io.ReadFull(c, head); err != nil || string(head) != "HTTP/1.1 200" {
					c.Close()
					return false
				}
				conn = c
				return true
			}, 10*time.Second, 50*time.Millisecond, "no connection got in")
			defer conn.Close()
			require.Eventually(t, func() bool {
				c, err := tc.dial()
				if err != nil {
					return false
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := fmt.Fprintf(c, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
					return false
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, 15*time.Second, 100*time.Millisecond, "a client that stopped reading held its connection")
		})
	}
}
