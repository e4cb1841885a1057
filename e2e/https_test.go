package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/localcluster"
	"github.com/rbee-project/rbee/node/tlsca"
)

// TestHTTPSOnTheLAN runs two `rbee node` processes with HTTPS listeners
// on a veth link and acts as a client on another "machine": a network
// namespace at the link's other end, with curl and the rbee CLI. An
// inference key streams a chat completion over verified TLS, is refused
// an admin call, works on the other node too and is refused on both once
// revoked; the cluster secret is no credential; plain HTTP on the HTTPS
// port gets no API; the CLI that pins the cluster CA refuses a node with
// another CA's certificate; plain HTTP off loopback is refused at start.
func TestHTTPSOnTheLAN(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl")
	}
	lan := newLANLink(t)
	dir := build(t, "rbee", "rbee-worker")
	bin := filepath.Join(dir, "rbee")
	tmp := t.TempDir()

	// --http-addr off loopback without --insecure-http: refused at start.
	out, err := exec.Command(bin, "node", "--data-dir", filepath.Join(tmp, "refused"), "--http-addr", fmt.Sprintf("0.0.0.0:%d", freePortOn(t, "127.0.0.1")),
		"--gossip-addr", "127.0.0.1:0", "--p2p-addr", "127.0.0.1:0", "--blob-addr", "127.0.0.1:0", "--no-mdns").CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "--https-addr")
	require.Contains(t, string(out), "--insecure-http")

	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: filepath.Join(tmp, "cluster"), Nodes: 2, Profile: "local"})
	require.NoError(t, err)
	for _, n := range cl.Nodes {
		n.HTTPSAddr = net.JoinHostPort(lan.HostIP, fmt.Sprint(freePortOn(t, lan.HostIP)))
	}
	logsOnFailure(t, cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	_, err = cl.WaitConverged(ctx, 2)
	require.NoError(t, err)
	n1, n2 := cl.Nodes[0], cl.Nodes[1]

	// On the node's machine: a worker, an inference key, the CA.
	var sp struct {
		State string `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli(t, bin, "worker", "spawn", "--model", "builtin:stories260k", "--hive", "node1", "-o", "json", "--node", n1.URL())), &sp))
	require.Equal(t, "ready", sp.State)
	var created struct {
		Key   string `json:"key"`
		Scope string `json:"scope"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli(t, bin, "apikey", "create", "--name", "webui", "--scope", "inference", "-o", "json", "--node", n1.URL())), &created))
	require.True(t, strings.HasPrefix(created.Key, "rbk_"), created.Key)
	require.Equal(t, "inference", created.Scope)
	key := created.Key
	caPEM := cli(t, bin, "tls", "ca", "--node", n1.URL())
	caFile := filepath.Join(tmp, "rbee-ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(caPEM), 0o644))
	var ca struct {
		Fingerprint string `json:"fingerprint"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli(t, bin, "tls", "ca", "-o", "json", "--node", n2.URL())), &ca))
	require.True(t, strings.HasPrefix(ca.Fingerprint, "sha256:"))
	// The join command carries the fingerprint once node1 has written it
	// to its node.json, which it does when it learns the CA (the CA is
	// made by the leader and reaches every node through the registry, so
	// another node may answer with it first).
	var tok struct {
		JoinCommand string `json:"join_command"`
	}
	require.Eventually(t, func() bool {
		require.NoError(t, json.Unmarshal([]byte(cli(t, bin, "token", "-o", "json", "--data-dir", n1.DataDir, "--node", n1.URL())), &tok))
		return strings.Contains(tok.JoinCommand, "--ca-fingerprint "+ca.Fingerprint)
	}, 10*time.Second, 50*time.Millisecond, "join command: %s", tok.JoinCommand)
	hives := cli(t, bin, "hive", "list", "--node", n1.URL())
	require.Contains(t, hives, n2.HTTPSAddr, "hive list shows the HTTPS listeners")

	// From the LAN machine. curl verifies TLS against the CA file; without
	// it, verification fails (exit 60).
	chat := `{"model":"stories260k","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":8,"stream":true}`
	curl := func(args ...string) (string, string, error) {
		return lan.Run("curl", append([]string{"-sS", "--max-time", "30"}, args...)...)
	}
	code := func(args ...string) string {
		o, _, _ := curl(append([]string{"-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
		return o
	}
	var stream string
	require.Eventually(t, func() bool {
		o, _, err := curl("-N", "--fail", "--cacert", caFile, "-H", "Authorization: Bearer "+key, "--json", chat, n1.HTTPSURL()+"/v1/chat/completions")
		stream = o
		return err == nil
	}, 60*time.Second, 200*time.Millisecond, "streamed chat over HTTPS")
	require.Contains(t, stream, "chat.completion.chunk")
	require.Contains(t, stream, "data: [DONE]")
	_, errOut, err := curl("--json", chat, "-H", "Authorization: Bearer "+key, n1.HTTPSURL()+"/v1/chat/completions")
	require.Error(t, err, "TLS must be verified")
	require.Contains(t, strings.ToLower(errOut), "certificate")

	// The inference key may not administer (403); the cluster secret is
	// no credential (401); plain HTTP to the HTTPS port gets no API.
	require.Equal(t, "403", code("--cacert", caFile, "-H", "Authorization: Bearer "+key, "--json", `{"operation":"apikey_list"}`, n1.HTTPSURL()+"/v1/jobs"))
	require.Equal(t, "401", code("--cacert", caFile, "-H", "Authorization: Bearer "+cl.Token(), n1.HTTPSURL()+"/v1/models"))
	require.Equal(t, "401", code("--cacert", caFile, n1.HTTPSURL()+"/v1/models"), "no credential off loopback")
	plain, _, _ := curl("-i", "-H", "Authorization: Bearer "+key, "http://"+n1.HTTPSAddr+"/v1/models")
	require.Contains(t, plain, "400 Bad Request")
	require.NotContains(t, plain, "stories260k")

	// The CLI on the LAN machine, trusting the CA file: the key works on
	// the other node (the worker is on node1: the request hops over
	// libp2p) and is refused an admin operation.
	o, errOut, err := lan.Run(bin, "infer", "--model", "stories260k", "-n", "4", "--temperature", "0", "--node", n2.HTTPSURL(), "--ca", caFile, "--token", key, "Once upon a time")
	require.NoError(t, err, errOut)
	require.NotEmpty(t, strings.TrimSpace(o))
	_, errOut, err = lan.Run(bin, "apikey", "list", "--node", n2.HTTPSURL(), "--ca", caFile, "--token", key)
	require.Error(t, err)
	require.Contains(t, errOut, "403")
	list := cli(t, bin, "apikey", "list", "--node", n2.URL())
	require.Contains(t, list, "webui")
	require.Contains(t, list, "inference")

	// Revoked on node2: refused on both nodes within 2 s.
	cli(t, bin, "apikey", "revoke", "webui", "--node", n2.URL())
	revoked := time.Now()
	require.Eventually(t, func() bool {
		return code("--cacert", caFile, "-H", "Authorization: Bearer "+key, n1.HTTPSURL()+"/v1/models") == "401" &&
			code("--cacert", caFile, "-H", "Authorization: Bearer "+key, n2.HTTPSURL()+"/v1/models") == "401"
	}, 2*time.Second, 20*time.Millisecond, "revoked key still accepted")
	t.Logf("revocation refused on both nodes %v after the CLI returned", time.Since(revoked).Round(time.Millisecond))

	// A node with a certificate from another CA (its own cluster,
	// --tls-cert/--tls-key): the CLI that pins the cluster CA refuses it,
	// and fetches the CA from a node of the cluster.
	own, err := tlsca.NewCA("someone else's CA", time.Now())
	require.NoError(t, err)
	leaf, err := own.Issue("impostor", tlsca.Names{IPs: []net.IP{net.ParseIP(lan.HostIP)}}, time.Now(), time.Hour)
	require.NoError(t, err)
	chainPEM, keyPEM, err := tlsca.EncodeCertificate(leaf)
	require.NoError(t, err)
	certFile, keyFile, ownCA := filepath.Join(tmp, "own.pem"), filepath.Join(tmp, "own.key"), filepath.Join(tmp, "own-ca.pem")
	require.NoError(t, os.WriteFile(certFile, chainPEM, 0o644))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	require.NoError(t, os.WriteFile(ownCA, []byte(own.CertPEM()), 0o644))
	other, err := localcluster.New(localcluster.Config{Binary: bin, Dir: filepath.Join(tmp, "other"), Nodes: 1, Profile: "local"})
	require.NoError(t, err)
	imp := other.Nodes[0]
	imp.HTTPSAddr = net.JoinHostPort(lan.HostIP, fmt.Sprint(freePortOn(t, lan.HostIP)))
	imp.ExtraArgs = []string{"--tls-cert", certFile, "--tls-key", keyFile}
	logsOnFailure(t, other)
	require.NoError(t, other.Start(ctx))
	require.Equal(t, "200", code("--cacert", ownCA, imp.HTTPSURL()+"/health"), "the node serves the user's certificate")

	_, errOut, err = lan.Run(bin, "tls", "ca", "--node", imp.HTTPSURL(), "--ca-fingerprint", ca.Fingerprint)
	require.Error(t, err, "the CLI accepted a node of another CA")
	require.Contains(t, errOut, "not from the pinned CA "+ca.Fingerprint)
	got, errOut, err := lan.Run(bin, "tls", "ca", "--node", n1.HTTPSURL(), "--ca-fingerprint", ca.Fingerprint)
	require.NoError(t, err, errOut)
	require.Equal(t, caPEM, got, "the CA fetched with the pinned fingerprint")
	_, errOut, err = lan.Run(bin, "status", "--node", n1.HTTPSURL(), "--token", key)
	require.Error(t, err)
	require.Contains(t, errOut, "--ca", "no trust configured: a hint names --ca and --ca-fingerprint")
}

// logsOnFailure prints the nodes' log tails when the test fails, and stops
// the cluster when it ends.
func logsOnFailure(t *testing.T, cl *localcluster.Cluster) {
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			for _, n := range cl.Nodes {
				b, _ := os.ReadFile(n.LogPath)
				t.Logf("==== %s log (tail)\n%s", n.Name, tail(string(b), 4000))
			}
		}
	})
}
