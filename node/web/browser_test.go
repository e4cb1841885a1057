package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
)

// chromiumPaths are the browsers the test looks for, Debian's first.
var chromiumPaths = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

func findChromium() string {
	for _, p := range chromiumPaths {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// buildWorker compiles the real rbee-worker into dir.
func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rbee-worker")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/rbee-worker")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build rbee-worker: %s", out)
	return bin
}

// artifactDir is where screenshots go: $RBEE_ARTIFACTS (CI keeps it) or a
// temp dir of the test.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("RBEE_ARTIFACTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	return t.TempDir()
}

// browser starts a headless Chromium with a fresh profile, loopback only.
func browser(t *testing.T, exe string, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 1000),
	)
	opts = append(opts, extra...)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first action starts the browser; it must run on ctx itself (a
	// child context with a deadline would stop the browser with it).
	require.NoError(t, chromedp.Do(ctx), "start chromium")
	return ctx
}

// tab is one page of the browser under test, with its JS errors collected.
type tab struct {
	t      *testing.T
	ctx    context.Context
	shots  string
	mu     sync.Mutex
	errors []string
}

func newTab(t *testing.T, browserCtx context.Context, shots string) *tab {
	ctx, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx))
	tb := &tab{t: t, ctx: ctx, shots: shots}
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			msg := (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error()
			t.Logf("page exception: %s", msg)
			tb.mu.Lock()
			tb.errors = append(tb.errors, msg)
			tb.mu.Unlock()
		}
	}()
	// Accept confirm() dialogs (the retire button asks).
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			t.Logf("dialog: %s", ev.Message)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return tb
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	require.NoError(tb.t, chromedp.Do(ctx, actions...))
}

func eval[T any](tb *tab, expr string, opts ...chromedp.EvaluateOption) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	require.NoError(tb.t, err, "evaluate %s", expr)
	return v
}

// wait polls a JS expression until it is truthy; on timeout it saves a
// screenshot and fails with the page's text.
func (tb *tab) wait(what, expr string, timeout time.Duration) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+expr+")", chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		tb.screenshot("failed-" + strings.ReplaceAll(tb.t.Name(), "/", "_"))
		text, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string]("document.body.innerText"))
		tb.t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, err, text)
	}
}

// jobOK waits for the newest job card of the page to end and requires it
// to have succeeded.
func (tb *tab) jobOK(what string, timeout time.Duration) {
	tb.t.Helper()
	tb.wait("the "+what+" job to end", `['ok', 'failed'].includes(document.querySelector('#actions-log .job')?.dataset.status)`, timeout)
	card := eval[string](tb, `document.querySelector('#actions-log .job').innerText`)
	require.Equal(tb.t, "ok", eval[string](tb, `document.querySelector('#actions-log .job').dataset.status`), "the %s job failed:\n%s", what, card)
	require.Contains(tb.t, card, what)
}

func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	// From the top: clicks scroll the page, and the sticky header would
	// show in the middle of a full-page shot.
	_ = chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(tb.shots, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		tb.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	tb.t.Logf("screenshot: %s", p)
	return p
}

func (tb *tab) noErrors() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	require.Empty(tb.t, tb.errors, "the page threw")
}

// js quotes s as a JS string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// chatReference asks the node for the same chat, not streamed, to compare
// with what the page rendered from the stream (greedy: deterministic).
func chatReference(t *testing.T, n *node.Node, model, prompt string, maxTokens int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens": maxTokens, "temperature": 0})
	resp, err := http.Post(n.URL()+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.NotEmpty(t, out.Choices)
	return out.Choices[0].Message.Content
}

// TestPageInBrowser drives the real page in headless Chromium against a
// real 3-node cluster: nodes and queen, spawn through the page, a streamed
// chat, an OpenAI error, retire through the page, the token form, and the
// layout at phone width.
func TestPageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster, a worker process and Chromium")
	}
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found (looked for " + strings.Join(chromiumPaths, ", ") + "): apt-get install chromium")
	}
	bin := buildWorker(t)
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) {
		cfg.WorkerBinary = bin
		cfg.WorkerHeartbeatTimeout = 5 * time.Second
		// node2 asks loopback clients for the token too: the page must
		// ask for it.
		cfg.RequireToken = i == 2
	})
	leader := c.WaitLeader()
	shots := artifactDir(t)
	bctx := browser(t, exe)

	// A follower's page, so that the queen shown is not just "this node".
	via := c.Nodes[0]
	if via == leader {
		via = c.Nodes[1]
	}
	tb := newTab(t, bctx, shots)
	tb.do(chromedp.Navigate(via.URL() + "/"))
	tb.wait("three alive nodes", `document.querySelectorAll('#nodes .node[data-state=alive]').length === 3`, nodetest.WaitTimeout)
	// The page shows the current queen (compared each time: on a loaded
	// machine leadership may move while the test runs).
	require.Eventually(t, func() bool {
		l := c.Leader()
		return l != nil && eval[string](tb, `document.querySelector('#nodes .node.leader')?.dataset.name || ''`) == l.Name()
	}, nodetest.WaitTimeout, 200*time.Millisecond, "the page shows the queen")
	require.Equal(t, 1, eval[int](tb, `document.querySelectorAll('#nodes .node.leader').length`))
	require.Equal(t, "live", eval[string](tb, `document.getElementById('conn').textContent`))
	require.Contains(t, eval[string](tb, `document.getElementById('here').textContent`), via.Name())
	require.True(t, eval[bool](tb, `document.getElementById('insecure-banner').hidden`), "a node on loopback shows no plain-HTTP warning")
	// Capabilities are shown (each node records its own after it starts):
	// every node card gets a RAM meter.
	tb.wait("RAM of every node", `[...document.querySelectorAll('#nodes .node')].every(n => n.querySelector('meter'))`, nodetest.WaitTimeout)

	// Spawn through the page's own action, on another node than the page's.
	tb.wait("node2 in the spawn form", `[...document.getElementById('spawn-hive').options].some(o => o.value === 'node2')`, nodetest.WaitTimeout)
	// The model field comes filled with the bundled model: a new user can
	// press Spawn as it is.
	require.Equal(t, "builtin:stories260k", eval[string](tb, `document.getElementById('spawn-model').value`))
	tb.do(
		chromedp.SetValue(chromedp.ID("spawn-hive"), "node2"),
		chromedp.Click(chromedp.ID("spawn-go")),
	)
	// Spawning needs the admin key: without it the node refuses (403) and
	// the page asks for a key, then retries the job with it.
	tb.wait("the key form for an admin action", `!document.getElementById('token-form').hidden && document.getElementById('token-why').textContent.includes('admin')`, 30*time.Second)
	tb.do(chromedp.SetValue(chromedp.ID("token-input"), via.AdminKey()), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	tb.jobOK("spawn", 90*time.Second)
	require.Contains(t, eval[string](tb, `document.querySelector('#actions-log .job').textContent`), "ready")
	tb.wait("a ready worker on node2", `[...document.querySelectorAll('#workers .worker[data-state=ready]')].some(w => w.textContent.includes('node2'))`, nodetest.WaitTimeout)
	workerID := eval[string](tb, `document.querySelector('#workers .worker').dataset.id`)
	// Heartbeats update the card in place: the element (and the button a
	// user may be pressing) stays across snapshots.
	hb := eval[string](tb, `(() => { const w = document.querySelector('#workers .worker'); w.dataset.probe = 'kept'; return w.querySelector('.hb').textContent; })()`)
	tb.wait("a newer heartbeat", `document.querySelector('#workers .worker .hb').textContent !== `+js(hb), nodetest.WaitTimeout)
	require.Equal(t, "kept", eval[string](tb, `document.querySelector('#workers .worker').dataset.probe || 'rebuilt'`))
	model := eval[string](tb, `document.querySelector('#workers .worker').dataset.model`)
	require.NotEmpty(t, workerID)
	tb.wait("the model listed on node2", `!!document.querySelector('#models tr[data-node=node2]')`, nodetest.WaitTimeout)
	tb.wait("the spawn in the jobs list", `!!document.querySelector('#jobs tr[data-status=ok]')`, nodetest.WaitTimeout)

	// Download through the page: the model a peer has is copied to node1,
	// with progress, and the page lists it on node1.
	tb.do(
		chromedp.SetValue(chromedp.ID("download-hive"), "node1"),
		chromedp.SetValue(chromedp.ID("download-model"), "builtin:stories260k"),
		chromedp.Click(chromedp.ID("download-go")),
	)
	tb.jobOK("download", 90*time.Second)
	require.True(t, eval[bool](tb, `(() => { const p = document.querySelector('#actions-log .job progress'); return !p.closest('[hidden]') && p.max > 1 && p.value === p.max; })()`),
		"the download's progress bar did not reach its total")
	tb.wait("the model listed on node1", `!!document.querySelector('#models tr[data-node=node1]')`, nodetest.WaitTimeout)

	// Chat: the served model shows up in the picker; a greedy answer is
	// streamed in several chunks and equals the non-streamed answer.
	tb.wait("a model to chat with", `document.getElementById('chat-model').value !== '' && !document.getElementById('chat-model').disabled`, nodetest.WaitTimeout)
	chatModel := eval[string](tb, `document.getElementById('chat-model').value`)
	require.Equal(t, model, chatModel, "the chat picker should offer the spawned worker's model")
	const prompt, maxTokens = "Once upon a time", 32
	want := chatReference(t, via, chatModel, prompt, maxTokens)
	require.NotEmpty(t, want)
	tb.do(
		chromedp.SetValue(chromedp.ID("chat-max"), fmt.Sprint(maxTokens)),
		chromedp.SetValue(chromedp.ID("chat-temp"), "0"),
		chromedp.SetValue(chromedp.ID("chat-prompt"), prompt),
		chromedp.Click(chromedp.ID("chat-send")),
	)
	tb.wait("the streamed answer", `document.querySelector('#chat-log .msg.assistant')?.dataset.state === 'done'`, 60*time.Second)
	got := eval[string](tb, `document.querySelector('#chat-log .msg.assistant .text').textContent`)
	require.Equal(t, want, got, "the page shows other text than the model's answer")
	require.Greater(t, eval[int](tb, `Number(document.querySelector('#chat-log .msg.assistant').dataset.chunks || 0)`), 1, "the answer came in one piece: not streamed")
	t.Logf("chat answer: %q", got)

	// An error in OpenAI's shape is shown: a model nobody serves.
	tb.do(chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('chat-model'); s.append(new Option('no-such-model', 'no-such-model')); s.value = 'no-such-model'; })()`))
	tb.do(chromedp.SetValue(chromedp.ID("chat-prompt"), "hello"), chromedp.Click(chromedp.ID("chat-send")))
	tb.wait("the error", `document.querySelectorAll('#chat-log .msg.assistant')[1]?.dataset.state === 'error'`, 30*time.Second)
	require.Contains(t, eval[string](tb, `document.querySelectorAll('#chat-log .msg.assistant')[1].textContent`), "model_not_found")
	tb.do(chromedp.SetValue(chromedp.ID("chat-model"), chatModel))

	shot := tb.screenshot("page-desktop")
	require.NotEmpty(t, shot)

	// No horizontal scroll from a phone (375 px) up, around the widths
	// where the grid changes its number of columns too.
	for _, w := range []int64{375, 420, 600, 900, 959, 960, 1000, 1400} {
		tb.do(chromedp.EmulateViewport(w, 812, chromedp.EmulateMobile))
		// Compared with the emulated width itself: a mobile viewport widens
		// to fit content that overflows, so innerWidth would hide it.
		tb.wait(fmt.Sprintf("the layout at %d px", w), fmt.Sprintf(`window.innerWidth === %[1]d && document.documentElement.scrollWidth <= %[1]d &&
			[...document.querySelectorAll('header, .panel, .card, table, input, select, textarea, button')].every(e => e.getBoundingClientRect().right <= %[1]d + 0.5)`, w), 10*time.Second)
		if w == 375 {
			tb.screenshot("page-375px")
		}
	}
	tb.do(chromedp.EmulateViewport(1280, 1000))

	// Retire through the page (confirm() accepted): the job finishes and
	// the worker leaves the page.
	tb.do(chromedp.Click(chromedp.CSS(`#workers .worker[data-id="` + workerID + `"] button.retire`)))
	tb.jobOK("retire", 60*time.Second)
	tb.wait("the worker to leave", `!document.querySelector('#workers .worker[data-id=`+js(workerID)+`]')`, nodetest.WaitTimeout)
	tb.wait("the chat picker to empty", `document.getElementById('chat-model').disabled`, nodetest.WaitTimeout)
	tb.noErrors()

	// node2 asks for the token: the page shows the form, and once the
	// token is saved it goes live and keeps the token.
	t2 := newTab(t, bctx, shots)
	t2.do(chromedp.Navigate(c.Nodes[2].URL() + "/"))
	t2.wait("the token form", `!document.getElementById('token-form').hidden`, 30*time.Second)
	require.Contains(t, eval[string](t2, `document.getElementById('token-why').textContent`), "unauthorized")
	t2.screenshot("page-token-form")
	// A wrong token is refused and the form comes back saying so.
	t2.do(chromedp.SetValue(chromedp.ID("token-input"), "not-the-token"), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	t2.wait("the form again", `!document.getElementById('token-form').hidden && document.getElementById('token-why').textContent.includes('refused')`, 30*time.Second)
	require.Zero(t, eval[int](t2, `document.querySelectorAll('#nodes .node').length`))
	// The cluster secret is no credential on loopback: refused too.
	t2.do(chromedp.SetValue(chromedp.ID("token-input"), nodetest.Token), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	t2.wait("the form again for the cluster secret", `!document.getElementById('token-form').hidden && document.getElementById('token-why').textContent.includes('refused')`, 30*time.Second)
	key := c.Nodes[2].AdminKey()
	t2.do(chromedp.SetValue(chromedp.ID("token-input"), key), chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)))
	t2.wait("three nodes with the key", `document.querySelectorAll('#nodes .node').length === 3`, nodetest.WaitTimeout)
	// Over plain HTTP the key stays in the page's memory, not in the
	// origin's storage (TestPageKeyStorage).
	require.True(t, eval[bool](t2, `localStorage.getItem('rbee.token') === null`))
	t2.noErrors()

	// The feed reconnects: a proxy in front of node0 drops every
	// connection; the page goes offline, then live again by itself.
	target, err := url.Parse(c.Nodes[0].URL())
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	proxy := httptest.NewServer(rp)
	t.Cleanup(proxy.Close)
	t3 := newTab(t, bctx, shots)
	t3.do(chromedp.Navigate(proxy.URL + "/"))
	t3.wait("live through the proxy", `document.getElementById('conn').textContent === 'live' && document.querySelectorAll('#nodes .node').length === 3`, nodetest.WaitTimeout)
	proxy.CloseClientConnections()
	t3.wait("offline after the drop", `document.getElementById('conn').textContent.startsWith('offline')`, 10*time.Second)
	t3.wait("live again", `document.getElementById('conn').textContent === 'live'`, 30*time.Second)
	t3.noErrors()
}
