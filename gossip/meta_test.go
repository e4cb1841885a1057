package gossip

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
)

func fullMeta() Meta {
	return Meta{
		Name:            "hive-1",
		HTTPAddr:        "192.168.1.10:7833",
		HTTPSAddr:       "0.0.0.0:7843",
		P2PAddrs:        []string{"/ip4/192.168.1.10/tcp/7835", "/ip4/127.0.0.1/tcp/7835"},
		Version:         "0.1.0",
		BootstrapExpect: 3,
		Role:            "voter",
		Tags:            map[string]string{"gpu": "rtx4090", "zone": "lab"},
		RegistryVersion: 2,
		Cluster:         "3f9c0a1b2c3d4e5f60718293a4b5c6d7",
		Features:        FeatureRegistryFeed,
	}
}

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		meta Meta
	}{
		{"zero", Meta{}},
		{"name only", Meta{Name: "h"}},
		{"full", fullMeta()},
		{"unicode", Meta{Name: "ruche-été", Tags: map[string]string{"k": ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeMeta(tt.meta)
			require.NoError(t, err)
			require.Equal(t, metaVersion, b[0])
			got, err := DecodeMeta(b)
			require.NoError(t, err)
			require.Equal(t, tt.meta, got)
		})
	}
}

func TestMetaSharesPeerIDSuffix(t *testing.T) {
	const id = "/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	// A wildcard listen on a host with many interfaces (docker bridges,
	// VPNs) yields many addresses, each ending in the peer id.
	var addrs []string
	for i := range 10 {
		addrs = append(addrs, "/ip4/172.17."+strings.Repeat("1", i%3+1)+".1/tcp/7835"+id)
	}
	m := Meta{Name: "hive", HTTPAddr: "127.0.0.1:7833", P2PAddrs: addrs, Version: "0.1.0"}
	b, err := EncodeMeta(m)
	require.NoError(t, err, "10 addresses fit because the peer id is written once")
	require.Equal(t, 1, strings.Count(string(b), id))
	got, err := DecodeMeta(b)
	require.NoError(t, err)
	require.Equal(t, m, got)

	// Addresses that do not share the suffix are written whole.
	mixed := Meta{P2PAddrs: []string{"/ip4/1.2.3.4/tcp/1" + id, "/ip4/1.2.3.4/tcp/2"}}
	b, err = EncodeMeta(mixed)
	require.NoError(t, err)
	got, err = DecodeMeta(b)
	require.NoError(t, err)
	require.Equal(t, mixed, got)
}

func TestMetaEncodingIsCompactAndStable(t *testing.T) {
	b, err := EncodeMeta(Meta{Name: "ab", BootstrapExpect: 3})
	require.NoError(t, err)
	require.Equal(t, []byte{1, tagName, 2, 'a', 'b', tagBootstrapExpect, 1, 3}, b)
	// Tags are written in key order, so equal metadata encodes equally.
	m := fullMeta()
	b1, err := EncodeMeta(m)
	require.NoError(t, err)
	for range 10 {
		b2, err := EncodeMeta(m)
		require.NoError(t, err)
		require.Equal(t, b1, b2)
	}
}

func TestEncodeMetaErrors(t *testing.T) {
	long := strings.Repeat("x", memberlist.MetaMaxSize)
	tests := []struct {
		name string
		meta Meta
		want error
	}{
		{"too large", Meta{Name: long}, ErrMetaTooLarge},
		{"many addrs", Meta{P2PAddrs: slices.Repeat([]string{"/ip6/fd00:1234:5678:9abc:def0:1234:5678:9abc/tcp/7835"}, 10)}, ErrMetaTooLarge},
		{"bad utf8", Meta{Name: "\xff"}, ErrBadConfig},
		{"bad utf8 tag", Meta{Tags: map[string]string{"k": "\xff"}}, ErrBadConfig},
		{"empty tag key", Meta{Tags: map[string]string{"": "v"}}, ErrBadConfig},
		{"empty addr", Meta{P2PAddrs: []string{""}}, ErrBadConfig},
		{"negative expect", Meta{BootstrapExpect: -1}, ErrBadConfig},
		{"huge expect", Meta{BootstrapExpect: 1001}, ErrBadConfig},
		{"negative registry version", Meta{RegistryVersion: -1}, ErrBadConfig},
		{"huge registry version", Meta{RegistryVersion: 1001}, ErrBadConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := EncodeMeta(tt.meta)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestDecodeMetaErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMetaMalformed},
		{"version 0", []byte{0}, ErrMetaVersion},
		{"version 2", []byte{2, tagName, 1, 'a'}, ErrMetaVersion},
		{"too large", append([]byte{1}, make([]byte, memberlist.MetaMaxSize)...), ErrMetaTooLarge},
		{"tag without length", []byte{1, tagName}, ErrMetaMalformed},
		{"length past end", []byte{1, tagName, 5, 'a'}, ErrMetaMalformed},
		{"huge length", []byte{1, tagName, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMetaMalformed},
		{"tag 0", []byte{1, 0, 0}, ErrMetaMalformed},
		{"empty string", []byte{1, tagName, 0}, ErrMetaMalformed},
		{"bad utf8", []byte{1, tagName, 1, 0xff}, ErrMetaMalformed},
		{"repeated name", []byte{1, tagName, 1, 'a', tagName, 1, 'b'}, ErrMetaMalformed},
		{"expect 0", []byte{1, tagBootstrapExpect, 1, 0}, ErrMetaMalformed},
		{"expect trailing", []byte{1, tagBootstrapExpect, 2, 3, 0}, ErrMetaMalformed},
		{"expect huge", []byte{1, tagBootstrapExpect, 2, 0xe9, 0x07}, ErrMetaMalformed},
		{"registry version 0", []byte{1, tagRegistryVersion, 1, 0}, ErrMetaMalformed},
		{"empty cluster", []byte{1, tagCluster, 0}, ErrMetaMalformed},
		{"cluster repeated", []byte{1, tagCluster, 1, 'a', tagCluster, 1, 'b'}, ErrMetaMalformed},
		{"registry version trailing", []byte{1, tagRegistryVersion, 2, 2, 0}, ErrMetaMalformed},
		{"registry version repeated", []byte{1, tagRegistryVersion, 1, 2, tagRegistryVersion, 1, 2}, ErrMetaMalformed},
		{"features 0", []byte{1, tagFeatures, 1, 0}, ErrMetaMalformed},
		{"features trailing", []byte{1, tagFeatures, 2, 1, 0}, ErrMetaMalformed},
		{"features repeated", []byte{1, tagFeatures, 1, 1, tagFeatures, 1, 1}, ErrMetaMalformed},
		{"tag empty key", []byte{1, tagTag, 2, 0, 'v'}, ErrMetaMalformed},
		{"tag key past end", []byte{1, tagTag, 2, 5, 'k'}, ErrMetaMalformed},
		{"repeated tag key", []byte{1, tagTag, 2, 1, 'k', tagTag, 2, 1, 'k'}, ErrMetaMalformed},
		{"suffix not p2p", []byte{1, tagP2PAddr, 1, '/', tagP2PSuffix, 2, '/', 'x'}, ErrMetaMalformed},
		{"suffix two components", append([]byte{1, tagP2PSuffix, 9}, "/p2p/a/bc"...), ErrMetaMalformed},
		{"suffix empty id", append([]byte{1, tagP2PSuffix, 5}, "/p2p/"...), ErrMetaMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeMeta(tt.in)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestDecodeMetaSkipsUnknownFields(t *testing.T) {
	// A newer build added field 42 (and repeats it); this build keeps the
	// fields it knows.
	in := []byte{1, 42, 3, 'n', 'e', 'w', tagName, 1, 'h', 42, 0}
	m, err := DecodeMeta(in)
	require.NoError(t, err)
	require.Equal(t, Meta{Name: "h"}, m)
}

// FuzzDecodeMeta checks that DecodeMeta never panics and that whatever it
// accepts re-encodes (within the size limit) to bytes that decode to the
// same Meta.
func FuzzDecodeMeta(f *testing.F) {
	full, err := EncodeMeta(fullMeta())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add([]byte{1})
	f.Add([]byte{1, tagTag, 3, 1, 'k', 'v'})
	f.Add([]byte{1, 42, 3, 'n', 'e', 'w', tagName, 1, 'h'})
	f.Add([]byte{1, tagHTTPSAddr, 1, 'a', tagHTTPSAddr, 1, 'b'})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeMeta(in)
		if err != nil {
			return
		}
		enc, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta %+v does not re-encode: %v", m, err)
		}
		if len(enc) > len(in) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(in), len(enc))
		}
		m2, err := DecodeMeta(enc)
		if err != nil {
			t.Fatal(err)
		}
		require.Equal(t, m, m2)
	})
}

func TestStateStrings(t *testing.T) {
	require.Equal(t, "alive", StateAlive.String())
	require.Equal(t, "suspect", StateSuspect.String())
	require.Equal(t, "dead", StateDead.String())
	require.Equal(t, "left", StateLeft.String())
	require.Equal(t, "State(9)", State(9).String())
	require.Equal(t, "join", EventJoin.String())
	require.Equal(t, "leave", EventLeave.String())
	require.Equal(t, "failed", EventFailed.String())
	require.Equal(t, "update", EventUpdate.String())
}
