package node

// RbeeBinaryFor exposes the install binary choice to the external tests.
func (n *Node) RbeeBinaryFor(goos, goarch string) (string, error) {
	return n.rbeeBinaryFor(goos, goarch)
}

// LocalWorkerPorts is the node's own view of its workers, built from the
// heartbeats it accepted: worker id → port.
func (n *Node) LocalWorkerPorts() map[string]int {
	n.local.mu.Lock()
	defer n.local.mu.Unlock()
	out := make(map[string]int, len(n.local.m))
	for id, lw := range n.local.m {
		out[id] = lw.hb.Port
	}
	return out
}
