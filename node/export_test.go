package node

// RbeeBinaryFor exposes the install binary choice to the external tests.
func (n *Node) RbeeBinaryFor(goos, goarch string) (string, error) {
	return n.rbeeBinaryFor(goos, goarch)
}
