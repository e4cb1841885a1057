package node

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/node/auth"
)

// The API's access control lives in node/auth (see DESIGN.md, "API
// access"); the node wires it: the guard reads the registry's API keys and
// the listeners' addresses through authNode, and routePerm says what each
// of the node's routes needs.

// AdminKey is the node's local admin credential (what admin.key holds).
func (n *Node) AdminKey() string { return n.adminKey }

// ReadAdminKey reads the local admin key from a node's data dir: it works
// for the node's own user only (the file is 0600). Errors wrap
// ErrNoAdminKey.
func ReadAdminKey(dataDir string) (string, error) { return auth.ReadAdminKey(dataDir) }

// AdminKeyFile is the admin key's file name in a data dir.
const AdminKeyFile = auth.AdminKeyFile

// newGuard is the API's guard for this node.
func (n *Node) newGuard() *auth.Guard {
	return auth.New(auth.Config{Name: n.cfg.Name, AllowedHosts: n.cfg.AllowedHosts, CORSOrigins: n.cfg.CORSOrigins,
		RequireToken: n.cfg.RequireToken, AdminKey: n.adminKey, Secret: n.secret, Routes: routePerm,
		Node: authNode{n}, Logger: n.log})
}

// authNode is what the guard reads of this node.
type authNode struct{ n *Node }

func (a authNode) APIKeys() []fsm.APIKey { return a.n.reg.APIKeys() }

func (a authNode) ListenAddrs() []net.Addr {
	var out []net.Addr
	for _, ln := range []net.Listener{a.n.httpLn, a.n.httpsLn} {
		if ln != nil {
			out = append(out, ln.Addr())
		}
	}
	return out
}

// ReadSecret reads the cluster secret from a node's data dir (the node's
// own user only).
func ReadSecret(dataDir string) (string, error) {
	b, err := atomicfile.ReadFile(filepath.Join(dataDir, SecretFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// nodeInfoFile records, in the data dir, where the running node listens, so
// `rbee token` can print a join command without asking the API.
const nodeInfoFile = "node.json"

// NodeInfo is the content of node.json.
type NodeInfo struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	APIURL     string `json:"api_url"`
	HTTPSURL   string `json:"https_url,omitempty"`
	GossipAddr string `json:"gossip_addr"`
	// CAFingerprint is the cluster CA's, once the node knows it.
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
}

// ReadNodeInfo reads node.json from a data dir.
func ReadNodeInfo(dataDir string) (NodeInfo, error) {
	var ni NodeInfo
	b, err := atomicfile.ReadFile(filepath.Join(dataDir, nodeInfoFile))
	if err != nil {
		return ni, err
	}
	err = json.Unmarshal(b, &ni)
	return ni, err
}

func (n *Node) writeNodeInfo() error {
	b, err := json.Marshal(NodeInfo{ID: n.ID(), Name: n.cfg.Name, APIURL: n.URL(), HTTPSURL: n.HTTPSURL(), GossipAddr: n.GossipAddr(), CAFingerprint: n.CAFingerprint()})
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(n.cfg.DataDir, nodeInfoFile), b, 0o600)
}

// routePerm is the permission a route needs; public routes (the page's
// static files, worker heartbeats, which authenticate with their own
// secret) skip authentication.
func routePerm(r *http.Request) (need auth.Perm, public bool) {
	p := r.URL.Path
	switch {
	case p == "/" || strings.HasPrefix(p, "/ui/"):
		return 0, true
	case p == "/v1/tls/ca" || p == "/v1/tls/ca.pem":
		// The CA certificate is public; a client that pins its
		// fingerprint fetches it before it has a key.
		return 0, true
	case p == "/v1/workers/heartbeat":
		return 0, true
	case p == "/v1/chat/completions" || p == "/v1/completions" || p == "/v1/embeddings" || p == "/api/generate" || p == "/api/chat" ||
		p == "/api/embed" || p == "/api/embeddings":
		return auth.Inference, false
	case p == "/v1/models" || strings.HasPrefix(p, "/v1/models/") || p == "/api/tags" || p == "/api/ps" || p == "/api/version" || p == "/api/show":
		return auth.Read | auth.Inference, false
	case p == "/v1/join" || p == "/v1/leave" || p == "/api/pull" || p == "/api/delete":
		// Ollama's pull and delete are model_download and model_delete.
		return auth.Admin, false
	case p == "/v1/jobs" && r.Method == http.MethodPost:
		// Each operation has its own permission, checked after parsing.
		return auth.Read | auth.Inference, false
	case p == "/v1/jobs" || strings.HasPrefix(p, "/v1/jobs/"):
		// Listing, following and cancelling jobs: a caller sees only its
		// own (principal.mayRead), so whoever may submit one (an
		// inference key's infer) may follow it.
		return auth.Read | auth.Inference, false
	}
	return auth.Read, false
}

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }
