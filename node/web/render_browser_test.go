package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/web"
)

// snapshotJSON is a cluster snapshot with what a test cluster on one CPU
// machine cannot show: GPUs, a non-voter, a dead node, a busy worker, a
// job half done; and names that would be markup if the page parsed them.
// It goes through api.ClusterSnapshot, so a field the node does not send
// (a misspelt name) is dropped here and the test fails on the page.
const snapshotJSON = `{
 "status": {"node": "gpu-box", "leader": "queen<i>1</i>", "raft_state": "Follower", "in_flight": 3,
  "nodes": [
   {"name": "queen<i>1</i>", "id": "id-q", "state": "alive", "voter": true, "leader": true, "http_addr": "10.0.0.1:7777", "version": "v1",
    "capabilities": {"cpu_model": "EPYC", "cores": 8, "threads": 16, "ram_total": 68719476736, "ram_free": 34359738368, "os": "linux", "arch": "amd64"}},
   {"name": "gpu-box", "id": "id-g", "state": "alive", "voter": false, "leader": false, "http_addr": "0.0.0.0:7777",
    "capabilities": {"cpu_model": "Ryzen", "cores": 16, "ram_total": 137438953472, "ram_free": 68719476736, "os": "linux", "arch": "amd64",
     "gpus": [{"vendor": "nvidia", "name": "RTX <img src=x onerror=alert(1)>", "vram_total": 25769803776, "vram_free": 21474836480, "index": 0}]}},
   {"name": "gone", "id": "id-d", "state": "dead", "voter": true}],
  "workers": [{"id": "w-1", "node": "gpu-box", "node_id": "id-g", "model": "llama<script>", "device": "cuda:0", "state": "ready", "live_state": "busy",
   "in_flight": 2, "queued": 1, "tokens_per_second": 12.5, "last_heartbeat_age_ms": 1500, "schedulable": true,
   "group": {"id": "g-ok", "model": "llama<script>", "mode": "pipeline", "state": "ready",
    "shards": [{"worker_id": "w-1", "node": "gpu-box", "node_id": "id-g", "lo": 0, "hi": 16}, {"worker_id": "w-2", "node": "queen<i>1</i>", "node_id": "id-q", "lo": 16, "hi": 32}]}}],
  "groups": [
   {"id": "g-ok", "model": "llama<script>", "mode": "pipeline", "state": "ready",
    "shards": [{"worker_id": "w-1", "node": "gpu-box", "node_id": "id-g", "lo": 0, "hi": 16}, {"worker_id": "w-2", "node": "queen<i>1</i>", "node_id": "id-q", "lo": 16, "hi": 32}]},
   {"id": "g-failed", "model": "big<b>", "mode": "tensor", "state": "failed", "error": "re-plan failed: b needs 9 GiB <i>and</i> has 4 GiB free",
    "shards": [{"worker_id": "w-8", "node": "gone", "node_id": "id-d", "lo": 0, "hi": 3}, {"worker_id": "w-9", "node": "gpu-box", "node_id": "id-g", "lo": 3, "hi": 8}]}],
  "models": [{"node_id": "id-g", "model_id": "llama<script>", "size": 4294967296, "quantization": "Q4_K_M", "sha256": "ab"}]},
 "jobs": [{"job_id": "job_1", "operation": "model_download", "status": "running", "created": "2026-01-01T00:00:00Z", "done": 50, "total": 100, "message": "from hf"}],
 "insecure_http": true
}`

// pageServer serves the page, a feed that sends the snapshot raw (decoded
// as an api.ClusterSnapshot and encoded again, so that it has the node's
// shape) once and holds, and /v1/models listing models. Call it before the
// browser starts: its cleanup then runs after the browser is gone (the
// feed handler only returns when its client does).
func pageServer(t *testing.T, raw string, models ...string) *httptest.Server {
	t.Helper()
	var snap api.ClusterSnapshot
	require.NoError(t, json.Unmarshal([]byte(raw), &snap))
	data, err := json.Marshal(snap)
	require.NoError(t, err)
	list := []map[string]string{}
	for _, m := range models {
		list = append(list, map[string]string{"id": m, "object": "model"})
	}
	modelsJSON, err := json.Marshal(map[string]any{"object": "list", "data": list})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", web.Handler())
	mux.Handle("GET /ui/", web.Handler())
	mux.HandleFunc("GET /v1/cluster/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: state\ndata: %s\n\n", data)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(modelsJSON)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	return srv
}

func TestPageRendersSnapshot(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	srv := pageServer(t, snapshotJSON, "llama<script>")

	tb := newTab(t, browser(t, exe), artifactDir(t))
	tb.do(chromedp.Navigate(srv.URL + "/"))
	tb.wait("the snapshot", `document.querySelectorAll('#nodes .node').length === 3`, 10*time.Second)

	// Markup in names is text, never elements.
	require.Zero(t, eval[int](tb, `document.querySelectorAll('main i, main img, main script').length`))
	require.Equal(t, "queen<i>1</i>", eval[string](tb, `document.querySelector('#nodes .node.leader').dataset.name`))
	gpu := eval[string](tb, `document.querySelector('#nodes .node[data-name=gpu-box]').innerText`)
	require.Contains(t, gpu, "nvidia RTX <img src=x onerror=alert(1)>")
	require.Contains(t, gpu, "4.0 GiB / 24 GiB", "VRAM used / total")
	require.Contains(t, gpu, "64 GiB / 128 GiB", "RAM used / total")
	require.Contains(t, gpu, "non-voter")
	require.Contains(t, gpu, "Ryzen · 16 cores")
	require.Equal(t, 2, eval[int](tb, `document.querySelectorAll('#nodes .node[data-name=gpu-box] meter').length`))
	gone := eval[string](tb, `document.querySelector('#nodes .node[data-name=gone]').innerText`)
	require.Contains(t, gone, "dead")
	require.NotContains(t, gone, "GPU", "no capabilities known: say nothing about GPUs")
	// Only a reachable address becomes a link.
	require.Equal(t, "http://10.0.0.1:7777/", eval[string](tb, `document.querySelector('#nodes .node.leader a').getAttribute('href')`))
	require.Zero(t, eval[int](tb, `document.querySelectorAll('#nodes .node[data-name=gpu-box] a').length`))

	w := eval[string](tb, `document.querySelector('#workers .worker[data-id=w-1]').innerText`)
	for _, s := range []string{"llama<script>", "gpu-box · cuda:0", "busy", "2 (+1 queued)", "12.5", "1.5 s ago"} {
		require.Contains(t, w, s)
	}
	require.NotContains(t, w, "not schedulable", "a schedulable worker shows no warning")
	require.Contains(t, w, "g-ok · pipeline · ready · shard 1/2 (head) · layers 0–16")
	// A group whose shards have no worker card has its own, saying why;
	// one shown on its shards' cards has none.
	require.Equal(t, 1, eval[int](tb, `document.querySelectorAll('#groups .group').length`))
	require.True(t, eval[bool](tb, `!document.getElementById('groups').hidden`))
	g := eval[string](tb, `document.querySelector('#groups .group[data-id=g-failed]').innerText`)
	for _, s := range []string{"failed", "big<b>", "tensor · gone KV heads 0–3, gpu-box KV heads 3–8", "re-plan failed: b needs 9 GiB <i>and</i> has 4 GiB free", "Retire"} {
		require.Contains(t, g, s)
	}
	require.Contains(t, eval[string](tb, `document.querySelector('#workers .worker[data-id=w-1] .live-state').className`), "warn")
	require.Contains(t, eval[string](tb, `document.getElementById('models').innerText`), "4.0 GiB")
	job := eval[string](tb, `document.querySelector('#jobs tr[data-job=job_1]').innerText`)
	require.Contains(t, job, "50%")
	require.Contains(t, job, "from hf")
	require.Contains(t, eval[string](tb, `document.getElementById('summary').textContent`), "2/3 alive")
	// A node that serves plain HTTP off loopback says so, visibly.
	require.True(t, eval[bool](tb, `!document.getElementById('insecure-banner').hidden && document.getElementById('insecure-banner').offsetHeight > 0`))
	require.Contains(t, eval[string](tb, `document.getElementById('insecure-banner').innerText`), "--https-addr")
	// Only alive nodes are offered to the actions.
	require.Equal(t, []string{"queen<i>1</i>", "gpu-box"}, eval[[]string](tb, `[...document.getElementById('spawn-hive').options].map(o => o.value)`))
	tb.wait("the chat model", `document.getElementById('chat-model').value === 'llama<script>'`, 10*time.Second)
	tb.screenshot("page-gpu-snapshot")
	tb.noErrors()
}

// TestPageNodeLinks: a node card links to a page this browser can reach.
// A plain HTTP listener on loopback is the node's own machine's: linked
// only for the node that served the page and nodes on its machine (a
// loopback gossip address, or the same host), never for a peer elsewhere,
// whose "127.0.0.1:7833" would be this browser's machine; such a peer
// links to its HTTPS listener, at its gossip host when that listens on
// every interface, or to nothing.
func TestPageNodeLinks(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	const raw = `{"status": {"node": "a", "leader": "a", "nodes": [
	 {"name": "a", "id": "a", "state": "alive", "http_addr": "127.0.0.1:7833", "gossip_addr": "10.0.0.1:7834"},
	 {"name": "b", "id": "b", "state": "alive", "http_addr": "127.0.0.1:7833", "gossip_addr": "10.0.0.2:7834", "https_addr": "0.0.0.0:7843"},
	 {"name": "c", "id": "c", "state": "alive", "http_addr": "127.0.0.1:7833", "gossip_addr": "10.0.0.3:7834"},
	 {"name": "d", "id": "d", "state": "alive", "http_addr": "127.0.0.1:7900", "gossip_addr": "127.0.0.1:7901"},
	 {"name": "e", "id": "e", "state": "alive", "http_addr": "127.0.0.1:7950", "gossip_addr": "10.0.0.1:7951"},
	 {"name": "f", "id": "f", "state": "alive", "http_addr": "127.0.0.1:7833", "gossip_addr": "10.0.0.6:7834", "https_addr": "10.0.0.6:7843"},
	 {"name": "g", "id": "g", "state": "alive", "http_addr": "127.0.0.1:7833", "gossip_addr": "[fd00::7]:7834", "https_addr": "[::]:7843"},
	 {"name": "h", "id": "h", "state": "alive", "http_addr": "10.0.0.8:7833", "gossip_addr": "10.0.0.8:7834"}]}}`
	srv := pageServer(t, raw)

	tb := newTab(t, browser(t, exe), artifactDir(t))
	tb.do(chromedp.Navigate(srv.URL + "/"))
	tb.wait("the snapshot", `document.querySelectorAll('#nodes .node').length === 8`, 10*time.Second)
	links := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll('#nodes .node')].map(n => [n.dataset.name, (n.querySelector('a') || {getAttribute: () => ''}).getAttribute('href')]))`)
	require.Equal(t, map[string]string{
		"a": "http://127.0.0.1:7833/",  // this page's node
		"b": "https://10.0.0.2:7843/",  // HTTPS on every interface: its gossip host
		"c": "",                        // loopback HTTP on another machine, no HTTPS
		"d": "http://127.0.0.1:7900/",  // a node on this machine (dev cluster)
		"e": "http://127.0.0.1:7950/",  // same host as this page's node
		"f": "https://10.0.0.6:7843/",  // its HTTPS address
		"g": "https://[fd00::7]:7843/", // IPv6
		"h": "http://10.0.0.8:7833/",   // plain HTTP off loopback
	}, links)
	tb.noErrors()
}

// TestPageKeyWithoutRead: a key the node refuses the feed to (403: an
// inference key off the node's machine lacks read) is a key problem, not
// an offline node: the page says "key needed", shows the node's message in
// the key form, and goes live once a key that may read is saved.
func TestPageKeyWithoutRead(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	const readKey = "rbk_reader"
	mux := keyPageMux(readKey, http.StatusForbidden,
		`{"error":{"code":"forbidden","message":"GET /v1/cluster/events needs the read permission","type":"invalid_request_error"}}`)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })

	tb := newTab(t, browser(t, exe), artifactDir(t))
	tb.do(chromedp.Navigate(srv.URL + "/"))
	tb.wait("the key form", `!document.getElementById('token-form').hidden`, 10*time.Second)
	require.Contains(t, eval[string](tb, `document.getElementById('token-why').textContent`), "needs the read permission")
	require.Equal(t, "key needed", eval[string](tb, `document.getElementById('conn').textContent`))
	tb.do(chromedp.SetValue(chromedp.ID("token-input"), readKey), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	tb.wait("the feed", `document.getElementById('conn').textContent === 'live' && document.querySelectorAll('#nodes .node').length === 1`, 10*time.Second)
	tb.noErrors()
}
