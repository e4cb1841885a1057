// Package reqbodytest sends the request internal/reqbody refuses at once:
// one that announces a body far over any limit and sends none of it.
package reqbodytest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// HugeLength is the Content-Length Announce claims: 10 GB.
const HugeLength = 10_000_000_000

// replyWithin bounds the wait for the answer: far under the body read
// deadlines of the servers under test (60 s on the node), so a server
// that waits for the body it was promised fails the test instead of
// answering late.
const replyWithin = 20 * time.Second

// Announce sends method rawURL (http only) with the given header lines
// and "Content-Length: HugeLength" and no body, and returns the answer,
// its body read. The test fails when no answer comes within replyWithin.
func Announce(t testing.TB, method, rawURL string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, u.RequestURI(), u.Host, int64(HugeLength))
	for k, vs := range header {
		for _, v := range vs {
			req += k + ": " + v + "\r\n"
		}
	}
	_, err = c.Write([]byte(req + "\r\n"))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(replyWithin)))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "no answer: the server waits for the announced body")
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}
