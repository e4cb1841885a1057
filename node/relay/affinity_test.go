package relay_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

func affinityKey(t *testing.T, body string) string {
	t.Helper()
	b, err := relay.NewBody([]byte(body), true)
	require.NoError(t, err)
	return b.AffinityKey()
}

// TestAffinityKey: the turns of one chat share a key however the client
// encodes them; other chats and other prompts do not; what has no usable
// key (a short prompt, embeddings, a malformed body) has "".
func TestAffinityKey(t *testing.T) {
	long := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20) // 900 bytes
	turn1 := `{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a story."}]}`
	cases := []struct {
		name string
		a, b string
		same bool
	}{
		{"second turn", turn1,
			`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a story."},{"role":"assistant","content":"Once upon a time."},{"role":"user","content":"More."}],"max_tokens":9}`, true},
		{"third turn", turn1,
			`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a story."},{"role":"assistant","content":"A."},{"role":"user","content":"B."},{"role":"assistant","content":"C."},{"role":"user","content":"D."}]}`, true},
		{"whitespace and key order", turn1,
			`{ "messages" : [ {"content":"Be brief.", "role":"system"}, {"content":"Tell me a story.","role":"user","name":"x"} ] }`, true},
		{"content parts in key order", `{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
			`{"messages":[{"role":"user","content":[{"text":"hi","type":"text"}]}]}`, true},
		{"another first question", turn1,
			`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell me a joke."}]}`, false},
		{"another system prompt", turn1,
			`{"messages":[{"role":"system","content":"Be long."},{"role":"user","content":"Tell me a story."}]}`, false},
		{"a role is not content", `{"messages":[{"role":"user","content":"hi"}]}`,
			`{"messages":[{"role":"system","content":"hi"},{"role":"user","content":"hi"}]}`, false},
		{"a long prompt and its continuation", fmt.Sprintf(`{"prompt":%q}`, long),
			fmt.Sprintf(`{"prompt":%q}`, long+"And then the dog woke up."), true},
		{"a prompt as a list of one", fmt.Sprintf(`{"prompt":%q}`, long), fmt.Sprintf(`{"prompt":[%q]}`, long), true},
		{"another long prompt", fmt.Sprintf(`{"prompt":%q}`, long), fmt.Sprintf(`{"prompt":%q}`, "A"+long), false},
		{"a prompt is not a chat", fmt.Sprintf(`{"prompt":%q}`, long),
			fmt.Sprintf(`{"messages":[{"role":"user","content":%q}]}`, long), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := affinityKey(t, tc.a), affinityKey(t, tc.b)
			require.NotEmpty(t, a)
			require.NotEmpty(t, b)
			if tc.same {
				require.Equal(t, a, b)
			} else {
				require.NotEqual(t, a, b)
			}
		})
	}
	// Chats that share their first 4 KiB share a key, however long.
	huge := strings.Repeat("x", 10_000)
	require.Equal(t,
		affinityKey(t, fmt.Sprintf(`{"messages":[{"role":"system","content":%q},{"role":"user","content":"a"}]}`, huge)),
		affinityKey(t, fmt.Sprintf(`{"messages":[{"role":"system","content":%q},{"role":"user","content":"b"}]}`, huge)))
	for name, body := range map[string]string{
		"short prompt":            `{"prompt":"Once upon a time"}`,
		"prompt list of two":      fmt.Sprintf(`{"prompt":[%q,%q]}`, long, long),
		"token ids":               `{"prompt":[1,2,3]}`,
		"embeddings":              fmt.Sprintf(`{"input":%q}`, long),
		"no messages":             `{"messages":[]}`,
		"messages not a list":     `{"messages":"hi"}`,
		"a message not an object": `{"messages":[1]}`,
	} {
		require.Empty(t, affinityKey(t, body), name)
	}
}

// TestForwardKeepsAChatOnOneWorker: through a real router over four
// workers (real HTTP servers), every later turn of a chat goes to the
// worker that served its first, and the chats spread over the workers.
// Without the body's key the router's random draws scatter the turns.
func TestForwardKeepsAChatOnOneWorker(t *testing.T) {
	c := &cluster{workers: map[string]*testWorker{}}
	for _, id := range []string{"a", "b", "c", "d"} {
		c.workers[id] = newWorker(t, id, 0, 0)
	}
	rl := relay.New(relay.Config{Router: router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: time.Minute, View: c}), Caller: c})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	send := func(body string) string {
		b, err := relay.NewBody([]byte(body), true)
		require.NoError(t, err)
		var st relay.State
		tg, _, err := rl.Forward(ctx, router.Filter{Model: "m"}, "/v1/infer", b, &st, func(resp *http.Response, tg router.Target) error {
			_, err := relay.Infer(resp, tg, &st, func(worker.TokenEvent) error { return nil })
			return err
		})
		require.NoError(t, err)
		return tg.Registry.ID
	}
	served := map[string]bool{}
	for i := range 16 {
		first := fmt.Sprintf(`{"role":"user","content":"Chat %d: tell me a story."}`, i)
		w := send(`{"messages":[` + first + `]}`)
		served[w] = true
		for turn := 2; turn <= 3; turn++ {
			var msgs []string
			msgs = append(msgs, first)
			for k := 2; k <= turn; k++ {
				msgs = append(msgs, fmt.Sprintf(`{"role":"assistant","content":"Answer %d."}`, k-1), fmt.Sprintf(`{"role":"user","content":"Turn %d."}`, k))
			}
			require.Equal(t, w, send(`{"messages":[`+strings.Join(msgs, ",")+`]}`), "chat %d turn %d", i, turn)
		}
	}
	require.Greater(t, len(served), 1, "the chats spread over the workers")
}
