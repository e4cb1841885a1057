// Package web serves the page every node shows at /.
package web

import "net/http"

// Handler serves the page and its assets. (Placeholder until the page lands.)
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><title>rbee</title><p>rbee node</p>"))
	})
}
