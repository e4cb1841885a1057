package bodydeadline

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/reqbody/reqbodytest"
)

// TestHeldBackBodyTimesOut: a client that sends headers and holds back
// the body is cut off at the deadline; one that sends its body gets an
// answer that may take longer than the deadline.
func TestHeldBackBodyTimesOut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	srv := httptest.NewServer(Handler(timeout, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
			return
		}
		time.Sleep(2 * timeout) // the answer outlives the deadline
		fmt.Fprint(w, "done")
	})))
	defer srv.Close()

	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("hello"))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "done", string(b))

	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
	require.NoError(t, err)
	// The server answers (408) or hangs up; only a server still waiting
	// for the body lets this read time out.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept waiting for the body")
	if err == nil {
		require.Equal(t, http.StatusRequestTimeout, r.StatusCode)
	}
}

// TestUnreadBodyDoesNotHoldTheAnswer: a handler that answers without
// reading a body announced far over what it would drain is answered at
// once, with the connection closed. Before, net/http (which sees the
// wrapped body, not its own) drained it first, waiting for the client up
// to the body deadline.
func TestUnreadBodyDoesNotHoldTheAnswer(t *testing.T) {
	srv := httptest.NewServer(Handler(time.Hour, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	})))
	defer srv.Close()
	resp, b := reqbodytest.Announce(t, http.MethodPost, srv.URL+"/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok", string(b))
	require.True(t, resp.Close)
}
