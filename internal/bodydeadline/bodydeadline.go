// Package bodydeadline bounds how long an HTTP server waits for a request
// body: the read deadline is set when the request arrives and lifted once
// the body has been read to its end, so the answer may then stream for as
// long as it needs. Without it a client that sent headers and then held
// back its body kept the connection for ever (net/http reads what is left
// of a body before it answers, even a 401).
package bodydeadline

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// Handler wraps next so that every request with a body must deliver it
// within timeout. A request without a body, or whose connection cannot
// take a deadline, goes to next as it is. Safe for concurrent use.
func Handler(timeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			next.ServeHTTP(w, r)
			return
		}
		orig := r.Body
		r.Body = &body{ReadCloser: orig, lift: func() { _ = rc.SetReadDeadline(time.Time{}) }}
		next.ServeHTTP(w, r)
		// net/http decides after the handler what to do with a body left
		// unread by the type of r.Body: its own body type, with 256 KiB or
		// more left, closes the connection at once; any other type it
		// drains, waiting for the client up to the deadline. A handler that
		// answers without reading a body announced as 10 GB must not so
		// wait for it.
		r.Body = orig
	})
}

// body lifts the read deadline when it has been read to its end. After
// any other error (the deadline itself) the deadline stays, so the
// server's drain of the rest cannot wait on the client either.
type body struct {
	io.ReadCloser
	once sync.Once
	lift func()
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.lift)
	}
	return n, err
}
