// Package trickle is a test server's way of sending a body too slowly to
// be useful but never idle: a byte at a time, a pause between bytes.
package trickle

import (
	"net/http"
	"strconv"
	"time"
)

// Write answers 200 with body (its Content-Length announced), one byte
// every pause, flushing each, until the body ends or the client goes away.
func Write(w http.ResponseWriter, r *http.Request, body []byte, pause time.Duration) {
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	for _, b := range body {
		if _, err := w.Write([]byte{b}); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(pause):
		}
	}
}
