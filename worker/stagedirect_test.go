package worker

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestStageDirectPort: a later stage with a direct stage port makes
// one-time offers through its API (secret required); the port takes a
// connection only with the offered certificate, from the offered address,
// with a live token, once; an unsharded worker has no port.
func TestStageDirectPort(t *testing.T) {
	cfg := testConfig(t)
	cfg.Shard = ShardConfig{Mode: ShardPipeline, Lo: 2}
	cfg.StageAddr = "127.0.0.1:0"
	_, base := startServer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	local := netip.MustParseAddr("127.0.0.1")

	o, ok, err := RequestStageOffer(ctx, base, testSecret, local)
	require.NoError(t, err)
	require.True(t, ok)
	o2, _, err := RequestStageOffer(ctx, base, testSecret, local)
	require.NoError(t, err)
	addr := "127.0.0.1:" + strconv.Itoa(o.Port)
	c, err := DialStageDirect(ctx, addr, o)
	require.NoError(t, err, "the offered connection")
	require.NoError(t, c.Close())

	// o2 keeps this address admitted, so it is the token that is refused.
	_, err = DialStageDirect(ctx, addr, o)
	require.ErrorContains(t, err, "did not accept", "a token is good for one connection")

	bad := o2
	bad.Fingerprint = strings.Repeat("0", 64)
	_, err = DialStageDirect(ctx, addr, bad)
	require.ErrorContains(t, err, "not the pinned one", "another certificate is refused by the head")
	wrong := o2
	wrong.Token = strings.Repeat("a", stageTokenLen)
	_, err = DialStageDirect(ctx, addr, wrong)
	require.Error(t, err, "an unknown token")
	c, err = DialStageDirect(ctx, addr, o2)
	require.NoError(t, err, "the offer survives a wrong token and a refused certificate")
	require.NoError(t, c.Close())

	// An offer for another address admits no connection from this one:
	// it is closed before TLS.
	o3, _, err := RequestStageOffer(ctx, base, testSecret, netip.MustParseAddr("127.0.0.2"))
	require.NoError(t, err)
	_, err = DialStageDirect(ctx, addr, o3)
	require.Error(t, err)
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	err = tls.Client(raw, &tls.Config{InsecureSkipVerify: true}).Handshake()
	require.Error(t, err, "no handshake without an offer for this address")
	raw.Close()
	// From 127.0.0.2 it is taken.
	d := tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}},
		Config: &tls.Config{InsecureSkipVerify: true}}
	tc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil && strings.Contains(err.Error(), "assign requested address") {
		t.Skip("127.0.0.2 is not a local address here (Linux has all of 127/8)")
	}
	require.NoError(t, err)
	_, err = tc.Write([]byte(o3.Token))
	require.NoError(t, err)
	ack := make([]byte, 1)
	_, err = tc.Read(ack)
	require.NoError(t, err)
	require.Equal(t, byte(stageAccepted), ack[0])
	tc.Close()

	// The API: the secret, a bad address.
	resp, err := http.Post(base+"/v1/shard/direct", "application/json", strings.NewReader(`{"client_ip":"127.0.0.1"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp = post(t, ctx, base+"/v1/shard/direct", `{"client_ip":"not an ip"}`)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// A worker without a port: no offer, and no error.
	_, plain := startServer(t, testConfig(t))
	_, ok, err = RequestStageOffer(ctx, plain, testSecret, local)
	require.NoError(t, err)
	require.False(t, ok)
}

// TestStageDirectOffersBounded: offers are bounded, and expired ones make
// room.
func TestStageDirectOffersBounded(t *testing.T) {
	p, err := newStagePort("127.0.0.1:0", func() (func(net.Conn), bool) { return nil, false }, testLogger(t))
	require.NoError(t, err)
	defer p.close()
	ip := netip.MustParseAddr("127.0.0.1")
	for range stageOffersMax {
		_, err := p.offer(ip)
		require.NoError(t, err)
	}
	_, err = p.offer(ip)
	require.Error(t, err)
	p.mu.Lock()
	for tok, o := range p.offers {
		o.until = time.Now().Add(-time.Second)
		p.offers[tok] = o
	}
	p.mu.Unlock()
	require.False(t, p.expects(ip), "expired offers admit nobody")
	_, err = p.offer(ip)
	require.NoError(t, err)
}
