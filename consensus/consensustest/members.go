package consensustest

import (
	"sort"
	"sync"

	"github.com/rbee-project/rbee/consensus"
)

// Membership is a gossip view a test controls; its Members method is a
// consensus.Config.Members func. Safe for concurrent use.
type Membership struct {
	mu      sync.Mutex
	members map[string]consensus.Member
}

// NewMembership returns an empty view.
func NewMembership() *Membership {
	return &Membership{members: map[string]consensus.Member{}}
}

// Set adds or replaces a member.
func (m *Membership) Set(member consensus.Member) {
	m.mu.Lock()
	defer m.mu.Unlock()
	member.P2PAddrs = append([]string(nil), member.P2PAddrs...)
	m.members[member.ID] = member
}

// SetState changes a member's state; it reports false for an unknown id.
func (m *Membership) SetState(id string, s consensus.MemberState) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	member, ok := m.members[id]
	if ok {
		member.State = s
		m.members[id] = member
	}
	return ok
}

// Remove forgets a member, as gossip does when it reaps one.
func (m *Membership) Remove(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.members, id)
}

// Members returns a copy of the view sorted by id.
func (m *Membership) Members() []consensus.Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]consensus.Member, 0, len(m.members))
	for _, member := range m.members {
		member.P2PAddrs = append([]string(nil), member.P2PAddrs...)
		out = append(out, member)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
