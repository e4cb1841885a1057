package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/localcluster"
)

// TestLocalClusterComesBack: a local cluster (`rbee dev --dir D`) started
// again on the directory of an earlier run takes up the secret its nodes
// stored, and comes back with its data; a first run's secret is random.
func TestLocalClusterComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	bin := buildRbee(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := func() *localcluster.Cluster {
		cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: 2, Profile: "local"})
		require.NoError(t, err)
		t.Cleanup(cl.Close)
		require.NoError(t, cl.Start(ctx))
		_, err = cl.WaitConverged(ctx, 2)
		require.NoError(t, err)
		return cl
	}
	first := start()
	token := first.Token()
	stored, err := os.ReadFile(filepath.Join(first.Nodes[1].DataDir, node.SecretFile))
	require.NoError(t, err)
	require.Contains(t, string(stored), token)
	other, err := localcluster.New(localcluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 1})
	require.NoError(t, err)
	require.NoError(t, other.Start(ctx))
	require.NotEqual(t, token, other.Token(), "a new directory gets a new secret")
	other.Close()
	first.Close()

	again := start()
	require.Equal(t, token, again.Token())
}
