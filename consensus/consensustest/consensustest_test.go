package consensustest

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
)

func TestNetworkDialsByIDAndKind(t *testing.T) {
	reg := NewRegistry()
	a, err := reg.Listen("a")
	require.NoError(t, err)
	defer a.Close()
	b, err := reg.Listen("b")
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, "b", b.LocalID())

	for _, tc := range []struct {
		kind consensus.ConnKind
		msg  string
	}{{consensus.ConnRaft, "raft"}, {consensus.ConnForward, "fwd"}} {
		ln := b.RaftListener()
		if tc.kind == consensus.ConnForward {
			ln = b.ForwardListener()
		}
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- err.Error()
				return
			}
			defer c.Close()
			buf, _ := io.ReadAll(c)
			got <- string(buf)
		}()
		conn, err := a.Dial(context.Background(), "b", tc.kind)
		require.NoError(t, err)
		_, err = conn.Write([]byte(tc.msg))
		require.NoError(t, err)
		require.NoError(t, conn.Close())
		require.Equal(t, tc.msg, <-got)
	}

	_, err = a.Dial(context.Background(), "nobody", consensus.ConnRaft)
	require.ErrorIs(t, err, ErrUnknownPeer)
	require.NoError(t, b.Close())
	require.NoError(t, b.Close())
	_, err = a.Dial(context.Background(), "b", consensus.ConnRaft)
	require.Error(t, err, "closed listener refuses")
}

func TestMembership(t *testing.T) {
	m := NewMembership()
	m.Set(consensus.Member{ID: "b", State: consensus.MemberAlive, P2PAddrs: []string{"x"}})
	m.Set(consensus.Member{ID: "a", State: consensus.MemberAlive})
	got := m.Members()
	require.Equal(t, "a", got[0].ID)
	got[1].P2PAddrs[0] = "mutated"
	require.Equal(t, "x", m.Members()[1].P2PAddrs[0])
	require.True(t, m.SetState("a", consensus.MemberLeft))
	require.False(t, m.SetState("zz", consensus.MemberLeft))
	require.Equal(t, consensus.MemberLeft, m.Members()[0].State)
	m.Remove("a")
	require.Len(t, m.Members(), 1)
}
