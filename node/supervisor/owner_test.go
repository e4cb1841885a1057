package supervisor

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/otheruser"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/worker/process"
)

// A call to a worker carries its secret and the client's request. A worker
// that died leaves its port free, and any local user may listen there
// before the node notices: the call went to them. Calls now go only to a
// server the node's user runs.
func TestCallsOnlyToTheNodesUser(t *testing.T) {
	u, next := otheruser.Recorder(t, "127.0.0.1", 0)
	pu, err := url.Parse(u)
	require.NoError(t, err)
	port, err := strconv.Atoi(pu.Port())
	require.NoError(t, err)
	const secret = "worker-secret-0123456789abcdef"
	f := newFixture(t, time.Minute)
	f.procs.add(secret, process.WorkerInfo{WorkerID: "w-gone", Port: port, PID: 1})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := f.s.Call(ctx, "w-gone", http.MethodPost, "/v1/infer", []byte(`{"prompt":"a user's prompt"}`))
	if err == nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, peercred.ErrServerOwner)
	after, err := http.Get(u + "/after")
	require.NoError(t, err)
	after.Body.Close()
	require.Equal(t, "-", next(), "the other user's server got the worker's secret and the request")
}
