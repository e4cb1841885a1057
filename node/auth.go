package node

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/node/jobs"
)

// The API's access model (see DESIGN.md, "API access"):
//
//   - A client on this machine without a credential may run inference and
//     read status, lists and metrics; it sees only the jobs it created (by
//     its uid, found from the kernel's socket table).
//   - Everything else needs the node's admin key: the file admin.key in the
//     data dir, 0600, readable only by the node's user. The CLI reads it
//     from --data-dir. It is accepted on loopback only.
//   - API keys (replicated, scoped inference|read|admin) work everywhere;
//     off loopback they are the only credential. The cluster secret is
//     never an API credential.
//   - --require-token makes loopback clients present a credential too.

// perm is a set of permissions; a route or operation needs any one of the
// bits it names, and permAdmin grants everything.
type perm uint8

const (
	permRead perm = 1 << iota
	permInference
	permAdmin
)

func (p perm) String() string {
	switch {
	case p&permAdmin != 0:
		return "admin"
	case p == permRead|permInference:
		return "read or inference"
	case p&permRead != 0:
		return "read"
	case p&permInference != 0:
		return "inference"
	}
	return "none"
}

// principal is who a request acts as.
type principal struct {
	perms perm
	// owner names the jobs this principal creates and may see: "admin",
	// "uid:<n>" for a local user without a credential, "anon" when the
	// uid is unknown (such jobs are readable by id only).
	owner string
}

func (p principal) can(need perm) bool {
	return p.perms&permAdmin != 0 || p.perms&need != 0
}

func (p principal) admin() bool { return p.perms&permAdmin != 0 }

// mayRead reports whether p may see a job owned by owner: an admin sees
// every job, anyone else only their own (an unknown owner only by id).
func (p principal) mayRead(owner string, listing bool) bool {
	if p.admin() {
		return true
	}
	if listing && p.owner == ownerAnon {
		return false
	}
	return owner == p.owner
}

const (
	ownerAdmin = "admin"
	ownerAnon  = "anon"
)

type principalKey struct{}

func principalFrom(ctx context.Context) principal {
	if p, ok := ctx.Value(principalKey{}).(principal); ok {
		return p
	}
	return principal{}
}

// adminKeyFile is the local admin credential's file in the data dir.
const adminKeyFile = "admin.key"

// adminKeyInfo labels the HKDF derivation of the admin key from the cluster
// secret; gossip and libp2p derive their keys with other labels.
const adminKeyInfo = "rbee local admin api key v1"

// deriveAdminKey derives the local admin key from the cluster secret. Every
// node of a cluster derives the same key, so any node's admin.key works
// against a node on the same machine (several nodes of one local cluster),
// and no node stores another secret. Knowing the key does not reveal the
// cluster secret.
func deriveAdminKey(secret string) string {
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, adminKeyInfo, 32)
	if err != nil {
		panic("node: hkdf: " + err.Error()) // only for lengths hkdf cannot give
	}
	return "rbeeadm_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(k))
}

// AdminKey is the node's local admin credential (what admin.key holds).
func (n *Node) AdminKey() string { return n.adminKey }

// ErrNoAdminKey: the data dir has no readable admin key.
var ErrNoAdminKey = errors.New("no readable admin key")

// ReadAdminKey reads the local admin key from a node's data dir: it works
// for the node's own user only (the file is 0600).
func ReadAdminKey(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, adminKeyFile))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoAdminKey, err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("%w: %s is empty", ErrNoAdminKey, filepath.Join(dataDir, adminKeyFile))
	}
	return k, nil
}

// ReadSecret reads the cluster secret from a node's data dir (the node's
// own user only).
func ReadSecret(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, secretFile))
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
	b, err := os.ReadFile(filepath.Join(dataDir, nodeInfoFile))
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

// writeAdminKey keeps key in dataDir/admin.key, 0600.
func writeAdminKey(dataDir, key string) error {
	path := filepath.Join(dataDir, adminKeyFile)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == key {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o600 {
			return nil
		}
	}
	return atomicfile.WriteFile(path, []byte(key+"\n"), 0o600)
}

// Auth failure limits: a source address that fails authfailLimit times
// within authfailWindow gets 429 until the window ends. Ten tries a minute
// are plenty for a person retyping a key and nothing for a guesser.
const (
	authfailLimit  = 10
	authfailWindow = time.Minute
	// authfailMaxAddrs bounds the table; past it the oldest windows go.
	authfailMaxAddrs = 4096
)

// authLimiter counts failed authentications per source address.
type authLimiter struct {
	mu   sync.Mutex
	fail map[string]*authfailWindowState
}

type authfailWindowState struct {
	start time.Time
	n     int
}

func newAuthLimiter() *authLimiter {
	return &authLimiter{fail: map[string]*authfailWindowState{}}
}

// blocked reports whether addr has used up its failures.
func (l *authLimiter) blocked(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.fail[addr]
	return s != nil && now.Sub(s.start) < authfailWindow && s.n >= authfailLimit
}

// failed records a failure of addr.
func (l *authLimiter) failed(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.fail[addr]
	if s == nil || now.Sub(s.start) >= authfailWindow {
		if s == nil && len(l.fail) >= authfailMaxAddrs {
			for k, v := range l.fail {
				if now.Sub(v.start) >= authfailWindow {
					delete(l.fail, k)
				}
			}
			if len(l.fail) >= authfailMaxAddrs {
				return // a flood of addresses: keep the ones already counted
			}
		}
		s = &authfailWindowState{start: now}
		l.fail[addr] = s
	}
	s.n++
}

// connInfo is what the API knows about a client connection; the owning uid
// of a loopback connection is looked up once, on first need.
type connInfo struct {
	local, remote net.Addr
	once          sync.Once
	uid           uint32
	uidErr        error
}

type connInfoKey struct{}

func (c *connInfo) owner() string {
	c.once.Do(func() { c.uid, c.uidErr = peercred.LoopbackUID(c.local, c.remote) })
	if c.uidErr != nil {
		return ownerAnon
	}
	return fmt.Sprintf("uid:%d", c.uid)
}

// connContext stores the connection's addresses for the uid lookup.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connInfoKey{}, &connInfo{local: c.LocalAddr(), remote: c.RemoteAddr()})
}

// remoteIP is the request's source address without the port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// bearer returns the request's bearer token, "" if none.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func tokenEqual(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// authenticate finds the request's principal. ok false means the request
// must be refused with 401 (why says what to do).
func (n *Node) authenticate(r *http.Request) (p principal, ok bool, why string) {
	tok := bearer(r)
	loopback := isLoopback(r)
	if tok != "" {
		if k, found := n.lookupAPIKey(tok); found {
			n.keyUse.touch(k.Name, time.Now().UTC().Truncate(time.Second))
			return principal{perms: scopePerms(k.Scope), owner: "key:" + k.Name}, true, ""
		}
		if loopback && tokenEqual(tok, n.adminKey) {
			return principal{perms: permAdmin | permRead | permInference, owner: ownerAdmin}, true, ""
		}
	}
	if loopback && !n.cfg.RequireToken {
		// A bearer that is not a valid key counts as no credential, as
		// llama-server without --api-key does: OpenAI clients always send
		// some key.
		owner := ownerAnon
		if ci, ok := r.Context().Value(connInfoKey{}).(*connInfo); ok {
			owner = ci.owner()
		}
		return principal{perms: permRead | permInference, owner: owner}, true, ""
	}
	switch {
	case tok == "" && loopback:
		return principal{}, false, "this node requires a credential from every client (--require-token): an API key (rbee apikey create) or, for the node's user, the admin key (rbee token --admin), as Authorization: Bearer"
	case tok == "":
		return principal{}, false, "clients off this node's machine need an API key: Authorization: Bearer <key> (CLI: --token or RBEE_TOKEN; an admin creates one with `rbee apikey create`)"
	case tokenEqual(tok, n.secret):
		return principal{}, false, "the cluster secret joins nodes and is no API credential: use an API key (`rbee apikey create` on a node)"
	}
	return principal{}, false, "the credential was refused"
}

// guard is the API's outer layer: it refuses requests a browser could be
// made to send on a website's behalf (foreign Host: DNS rebinding; foreign
// Origin; form content types), authenticates the caller and checks the
// route's permission. /health is open to everyone: it says only "up".
func (n *Node) guard(routes *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			routes.ServeHTTP(w, r)
			return
		}
		if !n.hostAllowed(r.Host) {
			writeError(w, http.StatusForbidden, jobs.CodeForbidden, "request Host "+quoteShort(r.Host)+" is not one of this node's names or addresses (add it with --allowed-host)")
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if !n.originAllowed(o, r.Host) {
				writeError(w, http.StatusForbidden, jobs.CodeForbidden, "cross-origin request from "+quoteShort(o)+" refused (allow an origin with --cors-origin)")
				return
			}
			w.Header().Set("Access-Control-Allow-Origin", o)
			w.Header().Add("Vary", "Origin")
			if r.Method == http.MethodOptions {
				// A preflight: the browser asks before it sends a request
				// with a JSON body or an Authorization header.
				w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
				w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
				w.Header().Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if !jsonOrNoBody(r) {
			writeError(w, http.StatusUnsupportedMediaType, jobs.CodeBadRequest, "this route takes application/json, not "+quoteShort(r.Header.Get("Content-Type")))
			return
		}
		need, public := routePerm(r)
		if public {
			routes.ServeHTTP(w, r)
			return
		}
		ip := remoteIP(r)
		now := time.Now()
		if n.authFails.blocked(ip, now) {
			w.Header().Set("Retry-After", fmt.Sprint(int(authfailWindow.Seconds())))
			writeError(w, http.StatusTooManyRequests, codeUnauthorized, "too many failed authentications from this address; try again later")
			return
		}
		p, ok, why := n.authenticate(r)
		if !ok {
			if bearer(r) != "" {
				n.authFails.failed(ip, now)
				// The presented value is never logged.
				n.log.Warn("api authentication failed", "remote", ip, "path", r.URL.Path)
			}
			writeError(w, http.StatusUnauthorized, codeUnauthorized, why)
			return
		}
		if !p.can(need) {
			writeError(w, http.StatusForbidden, jobs.CodeForbidden, needMessage(need, r.Method+" "+r.URL.Path))
			return
		}
		routes.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// codeUnauthorized is the error code of a 401: no or a refused credential.
const codeUnauthorized = "unauthorized"

// needMessage says what a refused caller lacks and how to get it.
func needMessage(need perm, what string) string {
	if need&permAdmin != 0 {
		return what + " needs the admin credential: on the node's machine run the CLI as the node's user (it reads admin.key from the data dir; --data-dir or RBEE_DATA_DIR), or pass the key from `rbee token --admin`"
	}
	return what + " needs the " + need.String() + " permission"
}

// routePerm is the permission a route needs; public routes (the page's
// static files, worker heartbeats, which authenticate with their own
// secret) skip authentication.
func routePerm(r *http.Request) (need perm, public bool) {
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
		return permInference, false
	case p == "/v1/models" || strings.HasPrefix(p, "/v1/models/") || p == "/api/tags" || p == "/api/ps" || p == "/api/version" || p == "/api/show":
		return permRead | permInference, false
	case p == "/v1/join" || p == "/v1/leave" || p == "/api/pull" || p == "/api/delete":
		// Ollama's pull and delete are model_download and model_delete.
		return permAdmin, false
	case p == "/v1/jobs" && r.Method == http.MethodPost:
		// Each operation has its own permission, checked after parsing.
		return permRead | permInference, false
	case p == "/v1/jobs" || strings.HasPrefix(p, "/v1/jobs/"):
		// Listing, following and cancelling jobs: a caller sees only its
		// own (principal.mayRead), so whoever may submit one (an
		// inference key's infer) may follow it.
		return permRead | permInference, false
	}
	return permRead, false
}

// jsonOrNoBody reports whether a request's body, if it has a Content-Type,
// is JSON. A browser can post text/plain, form-urlencoded and multipart
// bodies cross-site without a preflight; none of those reaches a route.
func jsonOrNoBody(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.ContentLength == 0
}

// quoteShort quotes s for an error message, cut to a sane length.
func quoteShort(s string) string {
	const max = 100
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// hostAllowed reports whether a request's Host names this node: a loopback
// or own interface address, localhost (and *.localhost, which browsers
// resolve to loopback themselves), the node's name, the machine's hostname,
// or an --allowed-host entry. Anything else is what DNS rebinding sends.
func (n *Node) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsLoopback() {
			return true
		}
		return n.ownIP(ip)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, h := range n.hostNames() {
		if host == h {
			return true
		}
	}
	return false
}

// hostIDRefresh: the machine's hostname and interface addresses are read
// at most this often for the Host check, not on every request (DHCP and a
// renamed host are picked up within it).
const hostIDRefresh = 10 * time.Second

// hostID caches what the Host check compares with; safe for concurrent use.
type hostID struct {
	mu    sync.Mutex
	at    time.Time
	names []string // lower case: node name, hostname (and its short form), --allowed-host names
	ips   []net.IP // the machine's interface addresses, --allowed-host addresses
}

// hostIdentity returns the cached names and addresses, reading them again when
// they are older than hostIDRefresh.
func (n *Node) hostIdentity() ([]string, []net.IP) {
	c := &n.hostID
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < hostIDRefresh {
		return c.names, c.ips
	}
	names := []string{strings.ToLower(n.cfg.Name)}
	if h, err := os.Hostname(); err == nil && h != "" {
		h = strings.ToLower(h)
		names = append(names, h)
		if short, _, ok := strings.Cut(h, "."); ok {
			names = append(names, short)
		}
	}
	var ips []net.IP
	for _, a := range n.cfg.AllowedHosts {
		a = strings.ToLower(strings.TrimSpace(a))
		if h, _, err := net.SplitHostPort(a); err == nil {
			a = h
		}
		a = strings.TrimSuffix(strings.Trim(a, "[]"), ".")
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
			continue
		}
		names = append(names, a)
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if in, ok := a.(*net.IPNet); ok {
				ips = append(ips, in.IP)
			}
		}
	}
	c.names, c.ips, c.at = names, ips, time.Now()
	return names, ips
}

// hostNames are the names a Host header may carry, lower case.
func (n *Node) hostNames() []string {
	names, _ := n.hostIdentity()
	return names
}

// ownIP reports whether ip is an address of this machine, of one of its
// listeners, or an --allowed-host address.
func (n *Node) ownIP(ip net.IP) bool {
	for _, ln := range []net.Listener{n.httpLn, n.httpsLn} {
		if ln == nil {
			continue
		}
		if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.Equal(ip) {
			return true
		}
	}
	_, ips := n.hostIdentity()
	for _, own := range ips {
		if own.Equal(ip) {
			return true
		}
	}
	return false
}

// originAllowed reports whether a browser Origin may use the API: the
// node's own origin (the page it serves) or a --cors-origin entry.
func (n *Node) originAllowed(origin, host string) bool {
	for _, o := range n.cfg.CORSOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, host) && n.hostAllowed(u.Host)
}

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }
