package web_test

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/web"
)

// sseEvent is what the page's readSSE hands to its callback.
type sseEvent struct {
	Event string `json:"event"`
	Data  string `json:"data"`
	ID    string `json:"id"`
}

// TestSSEParserInBrowser runs the page's own SSE reader (ui/sse.js) in
// Chromium on a stream with every line ending, comments, fields without
// a value, multi-byte text and an unterminated last event, split at every
// byte offset and one byte at a time: the events must not depend on where
// the network cuts the stream.
func TestSSEParserInBrowser(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		t.Skip("no Chromium found: apt-get install chromium")
	}
	srv := httptest.NewServer(web.Handler())
	t.Cleanup(srv.Close) // after the browser's cleanup: it runs first
	tb := newTab(t, browser(t, exe), t.TempDir())
	tb.do(chromedp.Navigate(srv.URL + "/"))
	tb.wait("sse.js", `window.rbeeSSE && typeof window.rbeeSSE.readSSE === 'function'`, 10*time.Second)

	input := ": hello\r\n" +
		"event: state\r\n" +
		"data: {\"a\":1}\r\n" +
		"\r\n" +
		"data:first\n" +
		"data:  second\n" +
		"id: 7\n" +
		"\n" +
		"event: no-data\n" +
		"\n" +
		"data\r" +
		"data: é🐝\r" +
		"\r" +
		"retry: 100\n" +
		"unknown: x\n" +
		"data: after\n" +
		"\n" +
		"data: unterminated"
	// What the HTML standard's parser dispatches for input.
	want := []sseEvent{
		{Event: "state", Data: `{"a":1}`},
		{Event: "message", Data: "first\n second", ID: "7"},
		{Event: "message", Data: "\né🐝", ID: "7"},
		{Event: "message", Data: "after", ID: "7"},
	}

	expr := `(async () => {
	  const bytes = new TextEncoder().encode(` + js(input) + `);
	  const run = async (chunks, stopAfter) => {
	    const body = new ReadableStream({ start(c) { for (const ch of chunks) c.enqueue(ch); c.close(); } });
	    const out = [];
	    await window.rbeeSSE.readSSE(new Response(body), (e) => { out.push(e); return out.length === stopAfter; });
	    return JSON.stringify(out);
	  };
	  const res = [await run([bytes])];
	  for (let k = 0; k <= bytes.length; k++) res.push(await run([bytes.slice(0, k), bytes.slice(k)]));
	  res.push(await run([...bytes].map((b) => new Uint8Array([b]))));
	  res.push(await run([bytes], 2));
	  return res;
	})()`
	res := eval[[]string](tb, expr, chromedp.EvalAwaitPromise)
	require.Len(t, res, len([]byte(input))+4)
	for i, r := range res[:len(res)-1] {
		var got []sseEvent
		require.NoError(t, json.Unmarshal([]byte(r), &got))
		require.Equal(t, want, got, "run %d", i)
	}
	var stopped []sseEvent
	require.NoError(t, json.Unmarshal([]byte(res[len(res)-1]), &stopped))
	require.Equal(t, want[:2], stopped, "returning true from the callback must stop reading")
	tb.noErrors()
}
