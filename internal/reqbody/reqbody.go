// Package reqbody reads an HTTP request body under a route's size limit,
// and refuses at once a body whose announced length is over it.
//
// http.MaxBytesReader alone reads a body until the limit is passed: a
// request that announces a huge Content-Length (10 GB) and then sends
// less, or nothing, kept the handler waiting for bytes until the body
// read deadline (internal/bodydeadline, 60 s on the node) and was then
// answered 400, not 413.
package reqbody

import (
	"errors"
	"io"
	"net/http"
)

// Reader returns r's body bounded to limit bytes, as
// http.MaxBytesReader(w, r.Body, limit) does, except that a body whose
// announced length (Content-Length) is over limit is refused before any
// of it is read: the first Read returns *http.MaxBytesError. The response
// to such an HTTP/1 request then closes the connection ("Connection:
// close"), so that net/http does not wait to drain a body the client may
// never send; under HTTP/2 the unread stream is reset anyway. A chunked
// body, whose length is not announced, is cut at the limit as
// http.MaxBytesReader cuts it.
func Reader(w http.ResponseWriter, r *http.Request, limit int64) io.ReadCloser {
	if r.ContentLength > limit {
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		return refused{body: r.Body, err: &http.MaxBytesError{Limit: limit}}
	}
	return http.MaxBytesReader(w, r.Body, limit)
}

// TooLarge reports whether err (from reading a Reader) means the body is
// over its limit, announced or read.
func TooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// refused is the body of a request announced over its limit: it reads
// nothing.
type refused struct {
	body io.ReadCloser
	err  error
}

func (b refused) Read([]byte) (int, error) { return 0, b.err }

func (b refused) Close() error { return b.body.Close() }
