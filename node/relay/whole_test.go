package relay_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
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
	for _, tc := range []struct {
		name   string
		size   int
		failed bool
	}{
		{"small", 100, false},
		{"at the bound", relay.MaxAnswer, false},
		{"over the bound", relay.MaxAnswer + 1, true},
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
			err = relay.Whole(rec, resp, router.Target{Registry: fsm.Worker{ID: "w1"}, NodeName: "n1"}, &st)
			if !tc.failed {
				require.NoError(t, err)
				require.True(t, st.Delivered)
				require.Equal(t, tc.size, rec.Body.Len())
				return
			}
			var rt *relay.Retryable
			require.ErrorAs(t, err, &rt)
			require.True(t, strings.Contains(err.Error(), "answer over"), err.Error())
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
