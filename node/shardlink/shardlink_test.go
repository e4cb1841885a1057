package shardlink_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/internal/p2ptest"
	"github.com/rbee-project/rbee/node/shardlink"
	"github.com/rbee-project/rbee/p2p"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/shard"
)

const stageSecret = "stage-worker-secret-0123456789abcdef"

// stageWorker stands in for a shard worker's /v1/shard: it checks the
// secret, upgrades and echoes what it reads.
func stageWorker(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/shard" || r.Header.Get("Authorization") != "Bearer "+stageSecret || r.Header.Get("Upgrade") != shard.ProtocolID {
			http.Error(w, "refused", http.StatusUnauthorized)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + shard.ProtocolID + "\r\n\r\n")
		_ = brw.Flush()
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, brw)
		}()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// workers is a node's worker table: worker id → port.
type workers map[string]int

func (w workers) Secret(id string) (string, int, bool) {
	p, ok := w[id]
	return stageSecret, p, ok
}

// heads is a node's view of its shards' groups: worker id → the node id
// of its group's head.
type heads map[string]string

func (h heads) HeadNode(id string) (string, bool) {
	n, ok := h[id]
	return n, ok
}

func newBridge(t testing.TB, ws workers, hs heads) (*shardlink.Bridge, *p2p.Host) {
	t.Helper()
	h := p2ptest.Host(t, "shardlink-test-secret", p2p.Service{Name: "rbee.shard-link", Protocol: shardlink.Protocol, Memory: shardlink.Memory})
	b := shardlink.New(shardlink.Config{LocalID: h.ID().String(), Host: h, Workers: ws, Groups: hs})
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(b.Close)
	return b, h
}

func echo(t *testing.T, url, token string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := worker.DialStage(url, token)(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		msg := []byte("hidden state " + strconv.Itoa(i))
		_, err := c.Write(msg)
		require.NoError(t, err)
		got := make([]byte, len(msg))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		require.Equal(t, msg, got)
	}
	return nil
}

// TestLinks: a head's link reaches a shard worker on another node over
// libp2p, and one on its own node directly; a wrong token, an unknown
// worker, a worker whose group another node heads (or that is no group's
// shard) or a forgotten link is refused with the reason.
func TestLinks(t *testing.T) {
	headBridge, headHost := newBridge(t, workers{"w-local": stageWorker(t)}, nil)
	shardHeads := heads{}
	_, shardHost := newBridge(t, workers{"w-remote": stageWorker(t), "w-theirs": stageWorker(t), "w-plain": stageWorker(t)}, shardHeads)
	require.NoError(t, headHost.AddPeer(shardHost.ID(), shardHost.Addrs()))
	remote := shardHost.ID().String()
	shardHeads["w-remote"] = headHost.ID().String()
	shardHeads["w-theirs"] = "12D3KooWSomeOtherNode"
	shardHeads["w-gone"] = headHost.ID().String()

	for _, tc := range []struct {
		name, node, worker, want string
		token                    func(string) string
	}{
		{name: "over libp2p", node: remote, worker: "w-remote"},
		{name: "on the head's node", node: headHost.ID().String(), worker: "w-local"},
		{name: "wrong token", node: remote, worker: "w-remote", token: func(string) string { return "not-the-token-0123456789abcdef" }, want: "401"},
		{name: "unknown worker", node: remote, worker: "w-nope", want: "does not head"},
		{name: "another node's group", node: remote, worker: "w-theirs", want: "does not head"},
		{name: "no group's shard", node: remote, worker: "w-plain", want: "does not head"},
		{name: "a shard that is not running", node: remote, worker: "w-gone", want: "no such shard worker"},
	} {
		url, token, err := headBridge.Add("g-1", tc.node, tc.worker)
		require.NoError(t, err)
		if tc.token != nil {
			token = tc.token(token)
		}
		err = echo(t, url, token)
		if tc.want == "" {
			require.NoError(t, err, tc.name)
		} else {
			require.ErrorContains(t, err, tc.want, tc.name)
		}
	}
	require.Equal(t, []string{"g-1"}, headBridge.Groups())
	require.Equal(t, shardlink.Counts{Bridged: 1}, headBridge.Counts(), "the stand-in has no direct port: the one remote link went through the nodes")
	url, token, err := headBridge.Add("g-2", remote, "w-remote")
	require.NoError(t, err)
	headBridge.Remove("g-2")
	require.ErrorContains(t, echo(t, url, token), "401", "a removed link")
}

// BenchmarkRoundTrip: one 8 KiB exchange (a 2048-wide hidden state) and
// its echo, straight to the stage endpoint, over a bare libp2p stream, and
// through two bridges over libp2p, all in this process (no scheduling of
// other processes): what the links themselves cost per exchange.
func BenchmarkRoundTrip(b *testing.B) {
	port := stageWorker(b)
	headBridge, headHost := newBridge(b, workers{}, nil)
	_, shardHost := newBridge(b, workers{"w": port}, heads{"w": headHost.ID().String()})
	require.NoError(b, headHost.AddPeer(shardHost.ID(), shardHost.Addrs()))
	url, token, err := headBridge.Add("g", shardHost.ID().String(), "w")
	require.NoError(b, err)
	// A bare libp2p stream with an echo at the other end: the share of
	// the bridged figure that is libp2p's.
	const echoProto = "/rbee/test-echo/1.0.0"
	for _, h := range []*p2p.Host{headHost, shardHost} {
		require.NoError(b, h.AddService(p2p.Service{Name: "test.echo", Protocol: echoProto, Memory: shardlink.Memory}))
	}
	shardHost.Handle(echoProto, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
	dialEcho := func(context.Context) (io.ReadWriteCloser, error) {
		return headHost.Dial(context.Background(), shardHost.ID(), echoProto)
	}
	for _, tc := range []struct {
		name string
		dial func(context.Context) (io.ReadWriteCloser, error)
	}{
		{"direct", worker.DialStage("http://127.0.0.1:"+strconv.Itoa(port), stageSecret)},
		{"libp2p-stream", dialEcho},
		{"bridged", worker.DialStage(url, token)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := tc.dial(context.Background())
			require.NoError(b, err)
			defer c.Close()
			msg, got := make([]byte, 8<<10), make([]byte, 8<<10)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/exchange")
		})
	}
}

// TestDirectLink: a remote shard worker with a direct stage port is
// reached straight: its node answers the head node's link request with
// an offer, the head node's bridge redirects the head there, and the head
// holds a TLS connection to the worker itself. Each side counts it.
func TestDirectLink(t *testing.T) {
	cfg := worker.DefaultConfig()
	cfg.ID, cfg.Secret, cfg.Threads = "w-direct", stageSecret, 1
	cfg.ModelPath = "../../testdata/model/stories260K.gguf"
	cfg.Shard = worker.ShardConfig{Mode: worker.ShardPipeline, Lo: 2}
	cfg.StageAddr = "127.0.0.1:0"
	w, err := worker.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, w.Start(ctx))
	defer w.Close()
	require.NoError(t, w.WaitReady(ctx))

	headBridge, headHost := newBridge(t, workers{}, nil)
	shardBridge, shardHost := newBridge(t, workers{"w-direct": w.Addr().(*net.TCPAddr).Port}, heads{"w-direct": headHost.ID().String()})
	require.NoError(t, headHost.AddPeer(shardHost.ID(), shardHost.Addrs()))
	url, token, err := headBridge.Add("g-1", shardHost.ID().String(), "w-direct")
	require.NoError(t, err)
	c, err := worker.DialStage(url, token)(ctx)
	require.NoError(t, err)
	_, direct := c.(*tls.Conn)
	require.True(t, direct, "the head holds a TLS connection to the worker, not the bridge's (%T)", c)
	require.NoError(t, c.Close())
	require.Equal(t, shardlink.Counts{Offered: 1}, shardBridge.Counts())
	require.Equal(t, shardlink.Counts{Redirected: 1}, headBridge.Counts(), "nothing went through the nodes")
}

// unreachablePortWorker stands in for a shard worker whose direct stage
// port cannot be reached (a firewall): it offers a port nothing listens
// on, and serves /v1/shard as stageWorker does.
func unreachablePortWorker(t *testing.T) int {
	t.Helper()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadPort := dead.Addr().(*net.TCPAddr).Port
	require.NoError(t, dead.Close())
	echoPort := stageWorker(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+stageSecret {
			http.Error(w, "refused", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v1/shard/direct" {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(worker.StageOffer{Port: deadPort, Fingerprint: strings.Repeat("ab", 32), Token: strings.Repeat("cd", 32)})
			return
		}
		// Everything else is the stage endpoint's.
		httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(echoPort)}).ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// TestDirectLinkFallsBack: when the offered port cannot be reached, the
// head goes through the nodes at once, and for its next links asks for
// nothing else.
func TestDirectLinkFallsBack(t *testing.T) {
	headBridge, headHost := newBridge(t, workers{}, nil)
	shardBridge, shardHost := newBridge(t, workers{"w-fw": unreachablePortWorker(t)}, heads{"w-fw": headHost.ID().String()})
	require.NoError(t, headHost.AddPeer(shardHost.ID(), shardHost.Addrs()))
	u, token, err := headBridge.Add("g-1", shardHost.ID().String(), "w-fw")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := worker.DialStage(u, token)
	for i := range 2 {
		c, err := dial(ctx)
		require.NoError(t, err, "link %d", i)
		_, err = c.Write([]byte("through the nodes"))
		require.NoError(t, err)
		got := make([]byte, len("through the nodes"))
		_, err = io.ReadFull(c, got)
		require.NoError(t, err)
		require.Equal(t, "through the nodes", string(got))
		require.NoError(t, c.Close())
	}
	require.Equal(t, shardlink.Counts{Offered: 1}, shardBridge.Counts(), "one offer: the second link did not ask")
	require.Equal(t, shardlink.Counts{Redirected: 1, Bridged: 2}, headBridge.Counts())
}
