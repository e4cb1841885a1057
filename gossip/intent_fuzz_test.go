package gossip

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDecodeIntent feeds arbitrary gossip messages to decodeIntent. It never
// panics; a rejected message yields the zero id and nonce; an accepted one
// names a non-empty, NUL-free node within MaxBroadcastSize, and
// encodeIntent of what it returned gives back exactly the input bytes (the
// encoding is canonical, so a relayed intent is the intent learnt).
func FuzzDecodeIntent(f *testing.F) {
	for _, s := range []struct {
		id    string
		nonce uint64
	}{
		{"12D3KooWLvz6VeTxbNxAgJjT4VJqLJGpZwWtgNBxuDc8x1RY2JnT", 0x18c2f3e4a5b6c7d8},
		{"12D3KooWabc", 0xdeadbeef01},
		{"n", 0},
		{"node-with-ünïcödé", ^uint64(0)},
		{strings.Repeat("x", MaxBroadcastSize-intentMsgLen), 7}, // exactly the limit
	} {
		f.Add(encodeIntent(s.id, s.nonce))
	}
	good := encodeIntent("12D3KooWabc", 1)
	for _, b := range [][]byte{
		nil,
		{msgLeaveIntent},
		good[:intentMsgLen],                  // no node
		append([]byte{msgUser}, good[1:]...), // wrong type
		encodeIntent("a\x00b", 1),            // NUL in node
		encodeIntent(strings.Repeat("x", MaxBroadcastSize), 1),   // too large
		encodeIntent(strings.Repeat("x", MaxBroadcastSize-8), 1), // one byte over
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		id, nonce, ok := decodeIntent(b)
		if !ok {
			require.Empty(t, id, "a rejected intent names no node")
			require.Zero(t, nonce, "a rejected intent has no nonce")
			return
		}
		require.NotEmpty(t, id)
		require.NotContains(t, id, "\x00")
		require.LessOrEqual(t, len(b), MaxBroadcastSize)
		require.Equal(t, b, encodeIntent(id, nonce), "an accepted intent re-encodes to the same bytes")
	})
}

// FuzzIntentRoundTrip encodes arbitrary node ids and nonces. The message
// is always intentMsgLen+len(id) bytes of type msgLeaveIntent, and
// decodeIntent accepts it exactly when the id is non-empty, has no NUL and
// the message fits MaxBroadcastSize, giving back the same id and nonce.
func FuzzIntentRoundTrip(f *testing.F) {
	f.Add("12D3KooWLvz6VeTxbNxAgJjT4VJqLJGpZwWtgNBxuDc8x1RY2JnT", uint64(0x18c2f3e4a5b6c7d8))
	f.Add("", uint64(1))
	f.Add("a\x00b", uint64(2))
	f.Add("\xff\xfe", uint64(3))
	f.Add(strings.Repeat("y", MaxBroadcastSize-intentMsgLen), uint64(4))
	f.Add(strings.Repeat("y", MaxBroadcastSize-intentMsgLen+1), uint64(5))
	f.Fuzz(func(t *testing.T, id string, nonce uint64) {
		msg := encodeIntent(id, nonce)
		require.Len(t, msg, intentMsgLen+len(id))
		require.Equal(t, msgLeaveIntent, msg[0])
		gotID, gotNonce, ok := decodeIntent(msg)
		valid := id != "" && !strings.Contains(id, "\x00") && len(msg) <= MaxBroadcastSize
		require.Equal(t, valid, ok, "id %q (%d bytes)", id, len(id))
		if ok {
			require.Equal(t, id, gotID)
			require.Equal(t, nonce, gotNonce)
		}
	})
}
