package node

import (
	"context"
	"net"
)

// WithoutAutoCA keeps the leader from creating the cluster CA.
func WithoutAutoCA(cfg *Config) { cfg.noAutoCA = true }

// ProposeClusterCA creates and proposes a new cluster CA even when the
// replica has one, and returns the fingerprint of the CA the registry
// holds afterwards.
func (n *Node) ProposeClusterCA(ctx context.Context) (string, error) {
	ca, err := n.proposeClusterCA(ctx)
	if err != nil {
		return "", err
	}
	return ca.Fingerprint(), nil
}

// SetInterfaceAddrs replaces the node's view of the machine's addresses.
func (n *Node) SetInterfaceAddrs(f func() ([]net.Addr, error)) {
	n.tls.mu.Lock()
	defer n.tls.mu.Unlock()
	n.tls.ifaceFn = f
}

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
