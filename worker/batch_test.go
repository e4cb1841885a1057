package worker

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/engine"
)

// TestBatcherSharesSteps: generations that join together advance in shared
// forward passes (far fewer steps than tokens), each produces exactly what
// it produces alone (greedy and seeded sampling, different lengths), and a
// generation whose client is gone leaves at the first step with nothing
// generated.
func TestBatcherSharesSteps(t *testing.T) {
	m, err := engine.Load(testModelPath, engine.Options{Threads: 1})
	require.NoError(t, err)
	defer m.Close()
	tok := m.Tokenizer()
	reqs := []engine.GenerateRequest{
		{Prompt: tok.Encode("Once upon a time", true, false), MaxTokens: 20},
		{Prompt: tok.Encode("The little dog", true, false), MaxTokens: 12, Sample: engine.SampleParams{Temperature: 0.8, TopK: 40, Seed: 5}},
		{Prompt: tok.Encode("Lily wanted to play", true, false), MaxTokens: 16, Sample: engine.SampleParams{Temperature: 1, Seed: 9}},
		{Prompt: tok.Encode("Tom saw a big tree", true, false), MaxTokens: 8, Stop: []string{"."}},
	}
	want := make([][]engine.Token, len(reqs))
	for i, r := range reqs {
		_, err := m.NewSession().Generate(context.Background(), r, func(tk engine.Token) error {
			want[i] = append(want[i], tk)
			return nil
		})
		require.NoError(t, err)
	}

	bt := makeBatcher(m, testLogger(t), len(reqs)+1)
	jobs := make([]*genJob, len(reqs))
	for i, r := range reqs {
		seq, err := m.NewSession().Begin(r)
		require.NoError(t, err)
		jobs[i] = &genJob{ctx: context.Background(), seq: seq, out: make(chan engine.Token, r.MaxTokens+1)}
		bt.join <- jobs[i]
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	seq, err := m.NewSession().Begin(reqs[0])
	require.NoError(t, err)
	left := &genJob{ctx: gone, seq: seq, out: make(chan engine.Token, 64)}
	bt.join <- left
	go bt.run()

	for i, j := range jobs {
		var got []engine.Token
		for tk := range j.out {
			got = append(got, tk)
		}
		require.NoError(t, j.err)
		require.Equal(t, want[i], got, "generation %d", i)
	}
	_, open := <-left.out
	require.False(t, open)
	require.ErrorIs(t, left.err, context.Canceled)
	require.Equal(t, engine.StopCancelled, left.res.StopReason)
	require.Zero(t, left.res.CompletionTokens)
	bt.close()

	longest, total := 0, 0
	for _, w := range want {
		longest = max(longest, len(w))
		total += len(w)
	}
	// One step per token of the longest generation (+1 for an
	// end-of-generation sample), not one per token of all of them.
	st := bt.stats()
	require.LessOrEqual(t, st.Steps, int64(longest+1))
	require.Greater(t, st.SequenceSteps, st.Steps)
	require.GreaterOrEqual(t, st.SequenceSteps, int64(total-len(want)))
}

// TestConcurrentRequestsMatchAlone: requests served at once by a worker
// with several slots (one shared forward pass per step) stream exactly
// what a one-slot worker streams for each of them alone.
func TestConcurrentRequestsMatchAlone(t *testing.T) {
	cfg := testConfig(t)
	cfg.Slots = 4
	_, batched := startServer(t, cfg)
	alone := startFresh(t)
	bodies := []map[string]any{
		{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0},
		{"prompt": "The little dog", "max_tokens": 20, "temperature": 0.8, "seed": 11},
		{"prompt": "Lily and Ben went to the park. Lily and Ben went to the park.", "max_tokens": 16, "temperature": 0},
		{"prompt": "Tom had a red ball", "max_tokens": 30, "temperature": 1.1, "top_k": 20, "seed": 4},
	}
	got := make([]inferStream, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = infer(t, batched, b)
		}()
	}
	wg.Wait()
	for i, b := range bodies {
		want := infer(t, alone, b)
		require.NotNil(t, got[i].End, "request %d: %v", i, got[i].Order)
		require.Equal(t, want.ids(), got[i].ids(), "request %d", i)
		require.Equal(t, want.text(), got[i].text(), "request %d", i)
		require.Equal(t, want.End.StopReason, got[i].End.StopReason)
	}
}

// TestPrefixReuseSlot: a chat's next turn goes to the slot whose cache holds
// the conversation so far, even after another conversation used the other
// slot in between, and its output is what a fresh worker gives.
func TestPrefixReuseSlot(t *testing.T) {
	cfg := testConfig(t)
	cfg.Slots = 2
	_, base := startServer(t, cfg)
	first := strings.Repeat("Lily and Ben went to the park to play with a ball. ", 3)
	turn1 := infer(t, base, map[string]any{"prompt": first, "max_tokens": 12, "temperature": 0})
	require.NotNil(t, turn1.End)
	require.Greater(t, turn1.Started.PromptTokens, minReusePrefix)
	other := infer(t, base, map[string]any{"prompt": "Tom had a red ball", "max_tokens": 4, "temperature": 0})
	require.NotEqual(t, turn1.Started.Slot, other.Started.Slot, "a new conversation takes the slot used longest ago")

	body := map[string]any{"prompt": first + turn1.text() + " Then they went home.", "max_tokens": 12, "temperature": 0}
	turn2 := infer(t, base, body)
	require.Equal(t, turn1.Started.Slot, turn2.Started.Slot)
	fresh := infer(t, startFresh(t), body)
	require.Equal(t, fresh.ids(), turn2.ids())
	// The end event says what the cache held: nothing for a first turn or
	// on a fresh worker, the earlier turn (less its last token or so, as
	// the joined text may tokenize apart) for the next turn.
	require.Zero(t, turn1.End.TokensCached)
	require.Zero(t, fresh.End.TokensCached)
	require.Greater(t, turn2.End.TokensCached, turn1.Started.PromptTokens-2)
	require.Less(t, turn2.End.TokensCached, turn2.Started.PromptTokens)

	// Requests whose prompts share only their first tokens do not evict a
	// conversation: the slot used longest ago is taken.
	resp := post(t, testCtx(t), base+"/v1/infer", map[string]any{"prompt": "Lily", "max_tokens": 2})
	require.Equal(t, http.StatusOK, resp.StatusCode)
	st := parseInfer(t, readAllSSE(t, resp.Body))
	require.Equal(t, other.Started.Slot, st.Started.Slot)
}

// TestSlowClientDoesNotStallOthers: a generation whose client does not
// read (its emit blocks) runs to the end of the context in the step loop
// without holding up another generation; it then delivers every token.
func TestSlowClientDoesNotStallOthers(t *testing.T) {
	const ctxLen = 64
	m, err := LoadEngine(testModelPath, LoadOptions{Threads: 1, ContextSize: ctxLen})
	require.NoError(t, err)
	defer m.Close()
	prompt := m.Encode("Once upon a time")
	release := make(chan struct{})
	first := make(chan struct{})
	type outcome struct {
		res Result
		n   int
		err error
	}
	slow := make(chan outcome, 1)
	go func() {
		n := 0
		res, err := m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: prompt, Sample: SampleParams{Temperature: 0}}, func(Token) error {
			if n == 0 {
				close(first)
				<-release
			}
			n++
			return nil
		})
		slow <- outcome{res, n, err}
	}()
	<-first
	fast := make(chan outcome, 1)
	go func() {
		res, err := m.NewSession().Generate(context.Background(), GenerateRequest{Prompt: m.Encode("The dog"), MaxTokens: 8}, func(Token) error { return nil })
		fast <- outcome{res: res, err: err}
	}()
	select {
	case o := <-fast:
		require.NoError(t, o.err)
		require.Equal(t, 8, o.res.CompletionTokens)
	case <-time.After(reqTimeout):
		t.Fatal("a generation whose client does not read stalled the step loop")
	}
	close(release)
	o := <-slow
	require.NoError(t, o.err)
	require.GreaterOrEqual(t, o.n, o.res.CompletionTokens)
	// It filled the context: the final token is sampled, not evaluated.
	require.Equal(t, StopLength, o.res.StopReason)
	require.Equal(t, ctxLen-len(prompt)+1, o.res.CompletionTokens)
}
