package node

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/auth"
)

// TestRoutePerm: what each route of the API needs; the page, the CA
// certificate and worker heartbeats (which carry their own secret) are
// public, anything unlisted needs read.
func TestRoutePerm(t *testing.T) {
	const (
		read  = auth.Read
		inf   = auth.Inference
		admin = auth.Admin
		any   = auth.Read | auth.Inference
	)
	cases := []struct {
		method, path string
		need         auth.Perm
		public       bool
	}{
		{"GET", "/", 0, true},
		{"GET", "/ui/app.js", 0, true},
		{"GET", "/v1/tls/ca", 0, true},
		{"GET", "/v1/tls/ca.pem", 0, true},
		{"POST", "/v1/workers/heartbeat", 0, true},
		{"POST", "/v1/chat/completions", inf, false},
		{"POST", "/v1/completions", inf, false},
		{"POST", "/v1/embeddings", inf, false},
		{"POST", "/api/generate", inf, false},
		{"POST", "/api/chat", inf, false},
		{"POST", "/api/embed", inf, false},
		{"POST", "/api/embeddings", inf, false},
		{"GET", "/v1/models", any, false},
		{"GET", "/v1/models/m1", any, false},
		{"GET", "/api/tags", any, false},
		{"GET", "/api/ps", any, false},
		{"GET", "/api/version", any, false},
		{"POST", "/api/show", any, false},
		{"POST", "/v1/join", admin, false},
		{"POST", "/v1/leave", admin, false},
		{"POST", "/api/pull", admin, false},
		{"DELETE", "/api/delete", admin, false},
		{"POST", "/v1/jobs", any, false},
		{"GET", "/v1/jobs", any, false},
		{"GET", "/v1/jobs/j1/events", any, false},
		{"DELETE", "/v1/jobs/j1", any, false},
		{"GET", "/v1/cluster", read, false},
		{"GET", "/metrics", read, false},
		{"GET", "/no/such/route", read, false},
	}
	for _, tc := range cases {
		need, public := routePerm(httptest.NewRequest(tc.method, tc.path, nil))
		require.Equal(t, tc.public, public, "%s %s", tc.method, tc.path)
		require.Equal(t, tc.need, need, "%s %s", tc.method, tc.path)
	}
}
