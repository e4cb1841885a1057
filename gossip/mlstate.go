package gossip

import (
	"fmt"
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// memberlist v0.5.4 tracks each node's state (alive, suspect, dead, left)
// in an unexported nodeState that embeds Node and shadows Node.State, so the
// State of every *Node it hands out is always StateAlive, and Members()
// omits dead and left nodes (hashicorp/memberlist#293, fix proposed in
// #321). serf works around this with its own intent messages; rbee needs
// memberlist's own suspicion state, so it reads nodeState directly:
//
//   - stateReader verifies, with reflect, that the pinned memberlist has the
//     exact layout mirrored below (field names, types, offsets); when it does
//     not (another memberlist version), it is disabled and Members falls back
//     to the public API (alive and suspect members, all reported alive;
//     departed members reported dead).
//   - snapshot takes memberlist's own nodeLock (read side), so reads are
//     properly synchronized with memberlist's writers.
//   - stateOf is only called from event delegate callbacks, which memberlist
//     invokes with nodeLock held and with a pointer to nodeState.Node.

// nodeStateMirror must match memberlist's nodeState field for field.
type nodeStateMirror struct {
	memberlist.Node
	Incarnation uint32
	State       memberlist.NodeStateType
	StateChange time.Time
}

type stateReader struct {
	lockOff  uintptr // offset of Memberlist.nodeLock
	nodesOff uintptr // offset of Memberlist.nodes
}

// newStateReader checks memberlist's layout and returns a reader, or an
// error explaining the mismatch.
func newStateReader() (*stateReader, error) {
	mt := reflect.TypeFor[memberlist.Memberlist]()
	lf, ok := mt.FieldByName("nodeLock")
	if !ok || lf.Type != reflect.TypeFor[sync.RWMutex]() {
		return nil, fmt.Errorf("memberlist.Memberlist.nodeLock missing or not a sync.RWMutex")
	}
	nf, ok := mt.FieldByName("nodes")
	if !ok || nf.Type.Kind() != reflect.Slice || nf.Type.Elem().Kind() != reflect.Pointer {
		return nil, fmt.Errorf("memberlist.Memberlist.nodes missing or not a slice of pointers")
	}
	got := nf.Type.Elem().Elem()
	want := reflect.TypeFor[nodeStateMirror]()
	if got.Kind() != reflect.Struct || got.Name() != "nodeState" || got.Size() != want.Size() || got.NumField() != want.NumField() {
		return nil, fmt.Errorf("memberlist nodeState layout changed (%s, %d bytes)", got, got.Size())
	}
	for i := range want.NumField() {
		g, w := got.Field(i), want.Field(i)
		if g.Name != w.Name || g.Type != w.Type || g.Offset != w.Offset {
			return nil, fmt.Errorf("memberlist nodeState field %d is %s %s at %d, want %s %s at %d",
				i, g.Name, g.Type, g.Offset, w.Name, w.Type, w.Offset)
		}
	}
	return &stateReader{lockOff: lf.Offset, nodesOff: nf.Offset}, nil
}

// nodeSnap is a copy of one memberlist node taken under nodeLock.
type nodeSnap struct {
	Name  string
	Addr  string
	Meta  []byte
	State memberlist.NodeStateType
}

// snapshot copies every node memberlist knows, dead and left ones included
// until memberlist reaps them.
func (r *stateReader) snapshot(ml *memberlist.Memberlist) []nodeSnap {
	base := unsafe.Pointer(ml)
	lock := (*sync.RWMutex)(unsafe.Add(base, r.lockOff))
	lock.RLock()
	defer lock.RUnlock()
	nodes := *(*[]*nodeStateMirror)(unsafe.Add(base, r.nodesOff))
	out := make([]nodeSnap, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, nodeSnap{
			Name:  n.Name,
			Addr:  n.Node.Address(),
			Meta:  append([]byte(nil), n.Meta...),
			State: n.State,
		})
	}
	return out
}

// stateOf returns the state of n, which must be the Node embedded in a
// memberlist nodeState and nodeLock must be held (true inside
// EventDelegate callbacks).
func (r *stateReader) stateOf(n *memberlist.Node) memberlist.NodeStateType {
	return (*nodeStateMirror)(unsafe.Pointer(n)).State
}
