package node

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
)

// TestOperationsMatchAPI: the node serves exactly the operations package
// api declares, so a client built on api never names one it lacks.
func TestOperationsMatchAPI(t *testing.T) {
	n := &Node{}
	n.registerOps()
	got := n.Operations()
	require.True(t, slices.IsSorted(got))
	require.Equal(t, api.Operations(), got)
}
