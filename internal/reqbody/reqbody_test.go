package reqbody_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/bodydeadline"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/internal/reqbody/reqbodytest"
)

// TestReader: behind the node's body deadline (an hour here), a body
// announced over the limit is answered 413 at once, with the connection
// closed, whatever the client still sends; one within the limit is read
// whole; a chunked one over the limit is cut at it. Before, the announced
// 10 GB waited for the body deadline and got a 400.
func TestReader(t *testing.T) {
	const limit = 1 << 10
	srv := httptest.NewServer(bodydeadline.Handler(time.Hour, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(reqbody.Reader(w, r, limit))
		switch {
		case reqbody.TooLarge(err):
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			fmt.Fprintf(w, "%d", len(b))
		}
	})))
	t.Cleanup(srv.Close)

	t.Run("announced over the limit", func(t *testing.T) {
		resp, _ := reqbodytest.Announce(t, http.MethodPost, srv.URL+"/x", nil)
		require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
		require.True(t, resp.Close, "the connection is closed, not drained")
	})
	cases := []struct {
		name    string
		body    io.Reader
		chunked bool
		status  int
		want    string
	}{
		{"at the limit", bytes.NewReader(make([]byte, limit)), false, 200, "1024"},
		{"one over, announced", bytes.NewReader(make([]byte, limit+1)), false, 413, ""},
		{"chunked within", strings.NewReader("hello"), true, 200, "5"},
		{"chunked over", io.LimitReader(zeros{}, 1<<20), true, 413, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL, tc.body)
			require.NoError(t, err)
			if tc.chunked {
				req.ContentLength = -1
				req.Body = io.NopCloser(tc.body)
			}
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.want != "" {
				b, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				require.Equal(t, tc.want, string(b))
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
