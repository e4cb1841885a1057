package node

import (
	"github.com/rbee-project/rbee/gossip"
)

// aliveOthers returns the ids of the alive peers (not this node).
func (n *Node) aliveOthers() map[string]bool {
	out := map[string]bool{}
	for _, m := range n.gsp.Members() {
		if m.State == gossip.StateAlive && m.ID != n.ID() {
			out[m.ID] = true
		}
	}
	return out
}
