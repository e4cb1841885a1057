package worker

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// errTypeAuth is OpenAI's error type for a missing or wrong key.
const errTypeAuth = "authentication_error"

// requireSecret answers 401 to every request that does not carry the
// worker's secret as "Authorization: Bearer <secret>": the worker's port
// answers its own node only, so no local process gets around the node's
// authentication by calling the worker directly. /health is no exception:
// the node's readiness probe sends the secret like every other call, and an
// open /health would tell a stranger which port hosts which worker.
func (s *Server) requireSecret(next http.Handler) http.Handler {
	want := []byte(s.cfg.Secret)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rbee-worker"`)
			// A stranger's connection is closed after the answer: kept
			// alive (2 minutes idle, for ever with a request now and
			// then) each held a descriptor and buffers of the worker,
			// which caps no connections, where the node caps them per user.
			w.Header().Set("Connection", "close")
			writeError(w, &apiError{status: http.StatusUnauthorized, typ: errTypeAuth, code: "unauthorized",
				msg: "this worker answers its own rbee node only; send requests to the node"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
