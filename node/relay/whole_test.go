package relay_test

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
)

// A complete answer is passed on whole or not at all: one over MaxAnswer
// is the worker's failure (the request may go elsewhere), never a 200
// with a body cut short.
func TestWholeAnswerBounded(t *testing.T) {
	const limit = 1 << 20
	for _, tc := range []struct {
		name     string
		size     int
		tooLarge bool
	}{
		{"small", 100, false},
		{"at the bound", limit, false},
		{"over the bound", limit + 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := bytes.Repeat([]byte("a"), tc.size)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
			}))
			t.Cleanup(srv.Close)
			resp, err := http.Get(srv.URL)
			require.NoError(t, err)
			defer resp.Body.Close()
			rec := httptest.NewRecorder()
			var st relay.State
			err = relay.WholeUpTo(rec, resp, router.Target{Registry: fsm.Worker{ID: "w1"}, NodeName: "n1"}, &st, limit)
			if !tc.tooLarge {
				require.NoError(t, err)
				require.True(t, st.Delivered)
				require.Equal(t, tc.size, rec.Body.Len())
				return
			}
			// Not the worker's failure: any worker would answer as much,
			// so it is neither retried nor counted against the worker.
			require.ErrorIs(t, err, relay.ErrAnswerTooLarge)
			var rt *relay.Retryable
			require.False(t, errors.As(err, &rt), "not a worker failure")
			require.Contains(t, err.Error(), "w1")
			require.False(t, st.Delivered)
			require.Zero(t, rec.Body.Len(), "nothing reached the client")
		})
	}
}

// A complete answer with invalid UTF-8 in a string (an engine's text)
// reaches the client as valid UTF-8 JSON.
func TestWholeAnswerValidUTF8(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{\"choices\":[{\"text\":\"\xff\xfe bad\"}]}"))
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	rec := httptest.NewRecorder()
	var st relay.State
	require.NoError(t, relay.Whole(rec, resp, router.Target{Registry: fsm.Worker{ID: "w1"}, NodeName: "n1"}, &st))
	require.Equal(t, "{\"choices\":[{\"text\":\"\ufffd bad\"}]}", rec.Body.String())
}
