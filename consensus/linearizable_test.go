package consensus_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
)

// regInput is one registry operation on a host entry used as a register:
// a write of its port through any server, or a read on the leader after a
// barrier (the registry's linearizable read).
type regInput struct {
	write bool
	key   string
	value int // written port; ignored for reads
}

// regModel is a register per key (porcupine's key-value model): port 0
// means "no host".
var regModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return 0 },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(int) == state.(int), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("put(%s, %d)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %d", in.key, output)
	},
}

// TestRegistryLinearizable records a history of concurrent writes (through
// any server, followers forwarding) and leader reads while the leader is
// stopped and restarted again and again, and checks it with porcupine: the
// registry behaves as one register per key. A write whose outcome the
// client could not learn (an error) may take effect at any later time.
func TestRegistryLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	cl := newCluster(t)
	cfgs := map[string]consensus.Config{}
	for _, id := range ids("lin", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfgs[id] = cfg
		cl.start(cfg)
	}
	// Writes in exactly-once envelopes, as a cluster whose servers all run
	// this build has them (node raises the registry version).
	apply(t, cl.waitLeader(), fsm.SetRegistryVersion{Version: fsm.Version})

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		nextVal = 1000
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	keys := []string{"h0", "h1", "h2"}
	const clients = 4
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for ops := 0; ops < 1000; ops++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				nodes := cl.running()
				if len(nodes) == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				n := nodes[rng.IntN(len(nodes))]
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if rng.IntN(2) == 0 {
					mu.Lock()
					nextVal++
					v := nextVal
					mu.Unlock()
					b, err := fsm.Encode(fsm.UpsertHost{Host: fsm.Host{Name: key, Host: "10.0.0.1", Port: v % 65000, State: fsm.HostKnown}})
					require.NoError(t, err)
					call := now()
					_, err = n.c.Apply(ctx, b)
					ret := now()
					if err != nil {
						ret = math.MaxInt64 // outcome unknown: may commit any time later
					}
					mu.Lock()
					history = append(history, porcupine.Operation{ClientId: c, Input: regInput{write: true, key: key, value: v % 65000}, Call: call, Return: ret})
					mu.Unlock()
				} else {
					call := now()
					if err := n.c.Barrier(ctx); err == nil {
						port := 0
						if h, ok := n.fsm.Host(key); ok {
							port = h.Port
						}
						ret := now()
						mu.Lock()
						history = append(history, porcupine.Operation{ClientId: c, Input: regInput{key: key}, Output: port, Call: call, Return: ret})
						mu.Unlock()
					} else if !errors.Is(err, consensus.ErrNotLeader) {
						time.Sleep(5 * time.Millisecond) // no leader right now
					}
				}
				cancel()
			}
		}()
	}
	// Chaos: stop the leader, let the others elect, bring it back; five
	// times.
	for range 5 {
		time.Sleep(300 * time.Millisecond)
		leader := cl.waitLeader()
		cl.stop(leader.id)
		time.Sleep(300 * time.Millisecond)
		cl.setState(leader.id, consensus.MemberAlive)
		cl.start(cfgs[leader.id])
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	// Every client call is bounded by its 3 s context: a client still busy
	// a minute later is stuck (a wait on raft that ignores its context).
	clientsDone := make(chan struct{})
	go func() { wg.Wait(); close(clientsDone) }()
	select {
	case <-clientsDone:
	case <-time.After(time.Minute):
		t.Fatal("a client call ignored its context and is still blocked")
	}

	mu.Lock()
	defer mu.Unlock()
	var writes, reads, unknown int
	for _, op := range history {
		switch {
		case !op.Input.(regInput).write:
			reads++
		case op.Return == math.MaxInt64:
			unknown++
		default:
			writes++
		}
	}
	t.Logf("history: %d acknowledged writes, %d writes with unknown outcome, %d leader reads", writes, unknown, reads)
	require.Positive(t, writes)
	require.Positive(t, reads)
	res := porcupine.CheckOperationsTimeout(regModel, history, time.Minute)
	require.Equal(t, porcupine.Ok, res, "the registry history is not linearizable")

	// The checker does catch a stale read: the same history plus a read,
	// after everything, of a value that was overwritten.
	var last porcupine.Operation
	for _, op := range history {
		if in := op.Input.(regInput); in.write && op.Return != math.MaxInt64 && op.Return > last.Return {
			last = op
		}
	}
	var older porcupine.Operation
	for _, op := range history {
		if in := op.Input.(regInput); in.write && in.key == last.Input.(regInput).key && op.Return < last.Call {
			older = op
		}
	}
	if older.Input != nil {
		end := now()
		stale := porcupine.Operation{ClientId: clients, Input: regInput{key: last.Input.(regInput).key}, Output: older.Input.(regInput).value, Call: end, Return: end + 1}
		require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(regModel, append(history, stale), time.Minute))
	}
}
