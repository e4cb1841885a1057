package node

import (
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
)

// blobHoldings is what the blob service reads of this node: who is alive
// and what the registry says each peer holds.
type blobHoldings struct{ n *Node }

func (h blobHoldings) AlivePeers() map[string]bool   { return h.n.aliveOthers() }
func (h blobHoldings) Models() []fsm.ModelHolding    { return h.n.reg.Models() }
func (h blobHoldings) Binaries() []fsm.BinaryHolding { return h.n.reg.Binaries() }

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
