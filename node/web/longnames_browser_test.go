package web_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestPageLongNames: the longest names the node accepts (a 253-character
// hive name, a long model reference, job message and worker id without a
// space) wrap; the page never scrolls sideways on a phone.
func TestPageLongNames(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	long := strings.Repeat("n", 253)
	model := "hf:" + strings.Repeat("org", 30) + "/" + strings.Repeat("repo", 40) + "/" + strings.Repeat("x", 150) + ".gguf"
	raw := fmt.Sprintf(`{"status": {"node": %[1]q, "leader": %[1]q, "raft_state": "Leader",
	 "nodes": [{"name": %[1]q, "id": "id-a", "state": "alive", "voter": true, "leader": true, "http_addr": "127.0.0.1:7833"}],
	 "workers": [{"id": %[3]q, "node": %[1]q, "node_id": "id-a", "model": %[2]q, "state": "ready", "schedulable": true}],
	 "models": [{"node_id": "id-a", "model_id": %[2]q, "size": 1024, "quantization": %[3]q}]},
	 "jobs": [{"job_id": %[3]q, "operation": "model_download", "status": "failed", "created": "2026-01-01T00:00:00Z", "message": %[2]q}]}`,
		long, model, "w-"+strings.Repeat("9", 200))
	srv := pageServer(t, raw, model)

	tb := newTab(t, browser(t, exe), artifactDir(t))
	tb.do(chromedp.Navigate(srv.URL + "/"))
	tb.wait("the snapshot", `document.querySelectorAll('#nodes .node').length === 1 && document.getElementById('chat-model').value !== ''`, 10*time.Second)
	for _, w := range []int64{375, 600, 1000} {
		tb.do(chromedp.EmulateViewport(w, 812, chromedp.EmulateMobile))
		tb.wait(fmt.Sprintf("no sideways scroll at %d px", w), fmt.Sprintf(`window.innerWidth === %[1]d && document.documentElement.scrollWidth <= %[1]d &&
			[...document.querySelectorAll('header, .panel, .card, table, input, select, textarea, button')].every(e => e.getBoundingClientRect().right <= %[1]d + 0.5)`, w), 10*time.Second)
	}
	tb.screenshot("page-long-names")
	tb.noErrors()
}
