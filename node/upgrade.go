package node

import (
	"context"
	"time"

	"github.com/rbee-project/rbee/fsm"
)

// raiseRegistryVersion (leader only) raises the registry version the
// cluster agreed on to the newest one every server supports, as gossip
// reports each server's build (Meta.RegistryVersion; a build older than
// that field supports version 1). Until then the leader writes nothing a
// server's build would not know (apply checks fsm.CheckWritable), and
// snapshots keep the format every server reads. A server gossip does not
// know holds the version where it is: its build is unknown.
func (n *Node) raiseRegistryVersion() {
	current := n.reg.RegistryVersion()
	if current >= n.reg.SupportedVersion() {
		return
	}
	servers, err := n.cons.Servers()
	if err != nil || len(servers) == 0 {
		return
	}
	target := n.reg.SupportedVersion()
	for _, s := range servers {
		m, ok := n.gsp.Member(s.ID)
		if !ok {
			return
		}
		target = min(target, max(m.Meta.RegistryVersion, 1))
	}
	if target <= current {
		return
	}
	cmd, err := fsm.Encode(fsm.SetRegistryVersion{Version: target})
	if err != nil {
		n.log.Error("encode registry version", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.apply(ctx, cmd); err != nil {
		n.log.Warn("raise registry version", "to", target, "err", err)
		return
	}
	n.log.Info("registry version raised: every server runs a build that supports it", "from", current, "to", target)
}
