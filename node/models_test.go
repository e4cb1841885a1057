package node_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/promtext"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// TestModelsByAnyNameOnAnyHive: a model one node holds is found on another
// hive by its short name, its catalog id or the REF it came from, and
// copied from that node, with the hub gone (an air-gapped LAN). A name
// nobody holds is a 404 with a hint, not an internal error.
func TestModelsByAnyNameOnAnyHive(t *testing.T) {
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	hub := hubtest.New()
	hub.AddFile("org/stories-GGUF", "stories260K-Q8_0.gguf", data)
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) { cfg.HFEndpoint = hub.URL() })
	n0, n1, n2 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	// Nobody holds the bundled model yet: its short name gets a hint.
	je := runErr(t, n1, map[string]any{"operation": "model_download", "model": "stories260k"})
	require.Equal(t, "not_found", je.Code)
	require.Contains(t, je.Message, "did you mean builtin:stories260k")

	var e modelcat.Entry
	run(t, n0, map[string]any{"operation": "model_download", "model": "hf:org/stories-GGUF:Q8_0"}, &e)
	require.Equal(t, modelcat.SourceHF, e.Source)
	hub.Close() // from here on the hub is unreachable
	require.Eventually(t, func() bool {
		for _, h := range n1.Registry().Models() {
			if h.ModelID == e.ID && h.Ref != "" && h.SHA256 == e.SHA256 {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)

	// By the REF the user typed, on another hive: a peer copy.
	var e1 modelcat.Entry
	run(t, n1, map[string]any{"operation": "model_download", "model": "hf:org/stories-GGUF:Q8_0"}, &e1)
	require.Equal(t, e.ID, e1.ID)
	require.Equal(t, e.SHA256, e1.SHA256)
	require.Equal(t, modelcat.SourcePeer, e1.Source)
	// The bytes came over n0's blob port, not the libp2p stream.
	require.Equal(t, 1.0, metric(t, n0, "rbee_blob_direct_transfers_total"))

	// By catalog id, through a forwarded job to node2.
	var e2 modelcat.Entry
	run(t, n0, map[string]any{"operation": "model_download", "model": e.ID, "hive": n2.Name()}, &e2)
	require.Equal(t, e.SHA256, e2.SHA256)

	// A builtin model by its short name on a hive that lacks it.
	var b modelcat.Entry
	run(t, n0, map[string]any{"operation": "model_download", "model": "builtin:stories260k"}, &b)
	require.Eventually(t, func() bool {
		for _, h := range n2.Registry().Models() {
			if h.ModelID == b.ID && h.NodeID == n0.ID() {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	var b2 modelcat.Entry
	run(t, n2, map[string]any{"operation": "model_download", "model": "stories260k"}, &b2)
	require.Equal(t, b.SHA256, b2.SHA256)

	// Nobody holds it: 404 with the hint that fits.
	je = runErr(t, n0, map[string]any{"operation": "model_download", "model": "nosuchmodel"})
	require.Equal(t, "not_found", je.Code)
	je = runErr(t, n0, map[string]any{"operation": "model_download", "model": "org/repo"})
	require.Equal(t, "not_found", je.Code)
	require.Contains(t, je.Message, "hf:org/repo")
}

// TestAPIRoutesAnswerJSON: unknown routes and models are JSON errors; the
// Ollama version and ps routes answer.
func TestAPIRoutesAnswerJSON(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	for _, tc := range []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/v1/nope", 404, `"code":"not_found"`},
		{"POST", "/api/nope", 404, `{"error":"no route POST /api/nope"}`},
		{"GET", "/v1/models/nosuch", 404, `"model_not_found"`},
		{"GET", "/api/version", 200, `"version":`},
		{"GET", "/api/ps", 200, `"models":[]`},
		// A known path with another method: 405 naming the methods.
		{"GET", "/v1/chat/completions", 405, `"code":"method_not_allowed"`},
		{"PUT", "/v1/chat/completions", 405, `use POST`},
		{"DELETE", "/v1/models", 405, `use GET or HEAD`},
		{"POST", "/api/tags", 405, `{"error":"POST /api/tags: use GET or HEAD"}`},
		{"PUT", "/v1/jobs/abc", 405, `use GET or HEAD or DELETE`},
	} {
		st, _, data := apiCall(t, n, tc.method, tc.path, "", "", "", nil)
		require.Equal(t, tc.status, st, "%s %s: %s", tc.method, tc.path, data)
		require.Contains(t, string(data), tc.want, "%s %s", tc.method, tc.path)
		if strings.HasPrefix(tc.path, "/v1/") {
			// OpenAI's error shape on every /v1 answer: clients read "type".
			require.Contains(t, string(data), `"type":"invalid_request_error"`, "%s %s", tc.method, tc.path)
			requireOpenAIErrorKeys(t, data)
		}
	}
	// Bodies of the wrong shape say so in JSON terms, not Go's.
	for _, tc := range []struct{ body, want string }{
		{`[]`, `the body must be a JSON object, not an array`},
		{`"x"`, `the body must be a JSON object, not a string`},
		{`{"model":5}`, `model must be a string, not a number`},
		{`{"model":"m","stream":"yes"}`, `stream must be a boolean, not a string`},
	} {
		st, _, data := apiCall(t, n, "POST", "/v1/chat/completions", "", "application/json", tc.body, nil)
		require.Equal(t, 400, st, tc.body)
		require.Contains(t, string(data), tc.want, tc.body)
		require.NotContains(t, string(data), "Go value", tc.body)
	}
	st, _, data := apiCall(t, n, "POST", "/v1/chat/completions", "", "text/plain", `{}`, nil)
	require.Equal(t, 415, st)
	require.Contains(t, string(data), `"type":"invalid_request_error"`)
	requireOpenAIErrorKeys(t, data)
	// A join address that cannot be one is the caller's error (400), not
	// an unreachable peer (502).
	for _, addr := range []string{"127.0.0.1:99999", "[::1", "127.0.0.1", ":7946", "127.0.0.1:0", "host:http"} {
		st, _, data := apiCall(t, n, "POST", "/v1/join", n.AdminKey(), "application/json", `{"addrs":["`+addr+`"]}`, nil)
		require.Equal(t, 400, st, "%s: %s", addr, data)
		require.Contains(t, string(data), "join address", addr)
	}
}

// requireOpenAIErrorKeys checks an error body has every key of OpenAI's
// error object (message, type, code, param; param may be null), as typed
// clients declare them.
func requireOpenAIErrorKeys(t *testing.T, data []byte) {
	t.Helper()
	var body struct {
		Error map[string]any `json:"error"`
	}
	require.NoError(t, json.Unmarshal(data, &body), "%s", data)
	for _, k := range []string{"message", "type", "code", "param"} {
		require.Contains(t, body.Error, k, "%s", data)
	}
}

// TestWriteWithoutQuorumFailsFast: on a node that lost its majority, a
// write job ends within seconds with code no_quorum naming the lost voters,
// not after a context deadline (or never).
func TestWriteWithoutQuorumFailsFast(t *testing.T) {
	c := nodetest.New(t, 3)
	survivor := c.Nodes[0]
	c.Kill(1)
	c.Kill(2)
	start := time.Now()
	je := runErr(t, survivor, map[string]any{"operation": "apikey_create", "name": "k", "scope": "read"})
	t.Logf("failed after %s: %s", time.Since(start), je.Message)
	require.Equal(t, "no_quorum", je.Code)
	require.Contains(t, je.Message, "node1")
	require.Contains(t, je.Message, "node2")
	require.Less(t, time.Since(start), 40*time.Second)
}

// metric reads one unlabelled series from n's /metrics.
func metric(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	req, err := http.NewRequest("GET", n.URL()+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+n.AdminKey())
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	v, ok := promtext.Value(resp.Body, name)
	require.True(t, ok, "no %s in /metrics", name)
	return v
}

// TestSubmitStreamsEvents: a job submitted with Accept: text/event-stream
// streams its events in the submit's answer, its id in a header, and the
// events URL serves the same events afterwards.
func TestSubmitStreamsEvents(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.Nodes[0]
	req, err := http.NewRequest("POST", n.URL()+"/v1/jobs", strings.NewReader(`{"operation":"status"}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode, string(body))
	id := resp.Header.Get(api.JobIDHeader)
	require.NotEmpty(t, id)
	require.Equal(t, "/v1/jobs/"+id+"/events", resp.Header.Get("Location"))
	require.Contains(t, string(body), "event: result")
	require.Contains(t, string(body), "event: done")
	st, _, again := apiCall(t, n, "GET", "/v1/jobs/"+id+"/events", "", "", "", nil)
	require.Equal(t, 200, st)
	require.Equal(t, string(body), string(again), "the same events at the events URL")
}

// TestModelByIDFallsBackToItsOrigin: a model asked for by its catalog id
// on a hive that lacks it is copied from the node that holds it; when that
// copy fails (the holder's file no longer has its sha256), the hive
// fetches it from the reference the holder recorded, instead of looking
// for a file named like the id and answering not_found.
func TestModelByIDFallsBackToItsOrigin(t *testing.T) {
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	hub := hubtest.New()
	t.Cleanup(hub.Close)
	hub.AddFile("org/stories-GGUF", "stories260K-Q8_0.gguf", data)
	c := nodetest.New(t, 2, func(i int, cfg *node.Config) { cfg.HFEndpoint = hub.URL() })
	n0, n1 := c.Nodes[0], c.Nodes[1]

	var e modelcat.Entry
	run(t, n0, map[string]any{"operation": "model_download", "model": "hf:org/stories-GGUF:Q8_0"}, &e)
	require.Eventually(t, func() bool {
		for _, h := range n1.Registry().Models() {
			if h.ModelID == e.ID && h.Ref != "" && h.SHA256 == e.SHA256 {
				return true
			}
		}
		return false
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	// The holder's copy rots: a peer copy of it fails its sha256.
	f, err := os.OpenFile(e.Path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(len(data)/2))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	var e1 modelcat.Entry
	run(t, n1, map[string]any{"operation": "model_download", "model": e.ID}, &e1)
	require.Equal(t, e.ID, e1.ID)
	require.Equal(t, e.SHA256, e1.SHA256)
	require.Equal(t, modelcat.SourceHF, e1.Source)
}

// TestModelDownloadSourceFailuresAreUnavailable: a hub that answers 503,
// one that cannot be reached, and one whose bytes do not have the sha256
// it announced are failures of the source, not of the node: the job's
// error code says unavailable, not internal; so does a disk without room
// for the file (space can be freed), and a file over the hive's
// --max-download-size is a bad request.
func TestModelDownloadSourceFailuresAreUnavailable(t *testing.T) {
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	hub := hubtest.New()
	t.Cleanup(hub.Close)
	hub.Corrupt(hub.AddFile("org/corrupt-GGUF", "stories260K-Q8_0.gguf", data))
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"overloaded"}`, http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	// A repo whose listing announces a file larger than any disk.
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`[{"type":"file","oid":"x","size":1125899906842624,"path":"m-Q4_K_M.gguf",` +
			`"lfs":{"oid":"` + strings.Repeat("ab", 32) + `","size":1125899906842624}}]`))
	}))
	t.Cleanup(huge.Close)
	// A hub whose file download is cut half way, every time.
	model := append([]byte(nil), data...)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") {
			_, _ = fmt.Fprintf(w, `[{"type":"file","oid":"x","size":%d,"path":"m-Q4_K_M.gguf","lfs":{"oid":"%x","size":%d}}]`,
				len(model), sha256.Sum256(model), len(model))
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(model)))
		_, _ = w.Write(model[:len(model)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(flaky.Close)
	for _, tc := range []struct {
		name, endpoint, model string
		maxSize               int64
		code                  string
	}{
		{"hub answers 503", busy.URL, "hf:org/repo", 0, "unavailable"},
		{"hub unreachable", gone.URL, "hf:org/repo", 0, "unavailable"},
		{"bytes do not match the sha256", hub.URL(), "hf:org/corrupt-GGUF", 0, "unavailable"},
		{"no room on the disk", huge.URL, "hf:org/repo", 1 << 62, "unavailable"},
		{"over --max-download-size", huge.URL, "hf:org/repo", 0, "bad_request"},
		{"connection cut on every try", flaky.URL, "hf:org/repo", 0, "unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
				cfg.HFEndpoint = tc.endpoint
				if tc.maxSize > 0 {
					cfg.MaxDownloadSize = tc.maxSize
				}
			})
			je := runErr(t, c.Nodes[0], map[string]any{"operation": "model_download", "model": tc.model})
			require.Equal(t, tc.code, je.Code, je.Message)
		})
	}
}

// TestPeerCopyFailsOverToAnotherHolder: two nodes hold a model and the hub
// is gone; the holder asked first serves a copy that fails its sha256.
// The third node copies the model from the other holder instead of
// giving up.
func TestPeerCopyFailsOverToAnotherHolder(t *testing.T) {
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	hub := hubtest.New()
	hub.AddFile("org/stories-GGUF", "stories260K-Q8_0.gguf", data)
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) { cfg.HFEndpoint = hub.URL() })
	n2 := c.Nodes[2]
	entries := map[string]modelcat.Entry{}
	for _, n := range c.Nodes[:2] {
		var e modelcat.Entry
		run(t, n, map[string]any{"operation": "model_download", "model": "hf:org/stories-GGUF:Q8_0"}, &e)
		entries[n.ID()] = e
	}
	hub.Close()
	var first string
	require.Eventually(t, func() bool {
		held := 0
		for _, h := range n2.Registry().Models() {
			if _, ok := entries[h.NodeID]; ok && h.SHA256 != "" {
				if held == 0 {
					first = h.NodeID
				}
				held++
			}
		}
		return held == 2
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	// The holder n2 asks first has a rotten copy.
	f, err := os.OpenFile(entries[first].Path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, int64(len(data)/2))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	var e modelcat.Entry
	run(t, n2, map[string]any{"operation": "model_download", "model": entries[first].ID}, &e)
	require.Equal(t, entries[first].SHA256, e.SHA256)
	require.Equal(t, modelcat.SourcePeer, e.Source)
}

// TestModelRouteTakesAnyName: GET /v1/models/{id} answers for every name a
// request may route by, also a reference with slashes ("hf:org/repo:Q8_0"),
// sent as it is (as OpenAI clients that do not escape the path send it)
// or escaped, and for the name clients take from /v1/models.
func TestModelRouteTakesAnyName(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a worker process")
	}
	data, err := os.ReadFile("../testdata/model/stories260K.gguf")
	require.NoError(t, err)
	hub := hubtest.New()
	t.Cleanup(hub.Close)
	hub.AddFile("org/stories-GGUF", "stories260K-Q8_0.gguf", data)
	bin := buildWorker(t)
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		cfg.HFEndpoint = hub.URL()
	})
	n := c.Nodes[0]
	const ref = "hf:org/stories-GGUF:Q8_0"
	var e modelcat.Entry
	run(t, n, map[string]any{"operation": "model_download", "model": ref}, &e)
	spawnModel(t, n, n.Name(), ref, 1)
	waitSchedulable(t, c, 1)

	for _, name := range []string{e.ID, ref, "hf:org%2Fstories-GGUF:Q8_0", "hf:org/stories-GGUF:Q8_0:latest"} {
		st, _, body := apiCall(t, n, "GET", "/v1/models/"+name, "", "", "", nil)
		require.Equal(t, 200, st, "%s: %s", name, body)
		var m struct{ ID, Object string }
		require.NoError(t, json.Unmarshal(body, &m), name)
		require.Equal(t, e.ID, m.ID, name)
		require.Equal(t, "model", m.Object, name)
	}
	// A name with slashes that nothing serves is the model's 404, not
	// the unknown route's.
	st, _, body := apiCall(t, n, "GET", "/v1/models/hf:other/repo:Q8_0", "", "", "", nil)
	require.Equal(t, 404, st, string(body))
	require.Contains(t, string(body), `"model_not_found"`)
}
