// Package auth is the API's access control: who a request acts as (the
// local admin key, a scoped API key, a local user without a credential),
// what a route needs, and the browser defences (the Host must name this
// node, an Origin must be its own or allowed, a body must be JSON). See
// node/DESIGN.md, "API access".
//
// The access model:
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
//   - RequireToken makes loopback clients present a credential too.
package auth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/apierror"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/node/jobs"
)

// Perm is a set of permissions; a route or operation needs any one of the
// bits it names, and Admin grants everything.
type Perm uint8

// The permissions.
const (
	Read Perm = 1 << iota
	Inference
	Admin
)

func (p Perm) String() string {
	switch {
	case p&Admin != 0:
		return "admin"
	case p == Read|Inference:
		return "read or inference"
	case p&Read != 0:
		return "read"
	case p&Inference != 0:
		return "inference"
	}
	return "none"
}

// Principal is who a request acts as.
type Principal struct {
	Perms Perm
	// Owner names the jobs this principal creates and may see: "admin",
	// "uid:<n>" for a local user without a credential, "key:<name>#<hash
	// prefix>" for an API key (a key created later under a revoked key's
	// name is another principal), "anon" when the uid is unknown (such
	// jobs are readable by id only).
	Owner string
	// keyHash is the registry hash of the API key the principal comes
	// from ("" for any other credential): its answers end if it is revoked.
	keyHash string
}

// Job owners that are no user.
const (
	OwnerAdmin = "admin"
	OwnerAnon  = "anon"
)

// Can reports whether p has any of need's permissions (admin has all).
func (p Principal) Can(need Perm) bool {
	return p.Perms&Admin != 0 || p.Perms&need != 0
}

// IsAdmin reports whether p holds the admin permission.
func (p Principal) IsAdmin() bool { return p.Perms&Admin != 0 }

// MayRead reports whether p may see a job owned by owner: an admin sees
// every job, anyone else only their own (an unknown owner only by id, never
// in a listing).
func (p Principal) MayRead(owner string, listing bool) bool {
	if p.IsAdmin() {
		return true
	}
	if listing && p.Owner == OwnerAnon {
		return false
	}
	return owner == p.Owner
}

type principalKey struct{}

// FromContext is the principal the guard stored in a request's context;
// the zero Principal (no permission) when there is none.
func FromContext(ctx context.Context) Principal {
	if p, ok := ctx.Value(principalKey{}).(Principal); ok {
		return p
	}
	return Principal{}
}

// CodeUnauthorized is the error code of a 401: no or a refused credential.
const CodeUnauthorized = "unauthorized"

// CodeTooManyFailures is the error code of a 429 to an address whose
// failed authentications used up their limit.
const CodeTooManyFailures = "too_many_failed_authentications"

// NeedMessage says what a refused caller lacks and how to get it.
func NeedMessage(need Perm, what string) string {
	if need&Admin != 0 {
		return what + " needs the admin credential: on the node's machine run the CLI as the node's user (it reads admin.key from the data dir; --data-dir or RBEE_DATA_DIR), or pass the key from `rbee token --admin`"
	}
	return what + " needs the " + need.String() + " permission"
}

// Node is what the guard needs of the node.
type Node interface {
	// APIKeys are the registry replica's keys (hashes only).
	APIKeys() []fsm.APIKey
	// ListenAddrs are the addresses of the node's API listeners: a Host
	// naming one of them is this node.
	ListenAddrs() []net.Addr
}

// Config configures a Guard.
type Config struct {
	// Name is the node's name, a Host it answers to.
	Name string
	// AllowedHosts are further Host names and addresses (--allowed-host).
	AllowedHosts []string
	// CORSOrigins are browser origins allowed besides the node's own.
	CORSOrigins []string
	// RequireToken: loopback clients need a credential too.
	RequireToken bool
	// AdminKey is the local admin credential (loopback only); Secret is
	// the cluster secret, recognised only to say it is no credential.
	AdminKey, Secret string
	// Routes is the permission a request's route needs; public routes
	// skip authentication (but not the browser checks).
	Routes func(*http.Request) (need Perm, public bool)
	Node   Node
	Logger *slog.Logger
}

// Guard authenticates API requests. Safe for concurrent use.
type Guard struct {
	cfg   Config
	fails *limiter
	uses  keyUse
	host  hostID
	open  openAnswers
}

// New returns a guard.
func New(cfg Config) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Guard{cfg: cfg, fails: newLimiter()}
}

// connInfo is what the API knows about a client connection; the owning uid
// of a loopback connection is looked up once, on first need.
type connInfo struct {
	local, remote net.Addr
	// peer, when set, may know the uid already (the listener looked it
	// up to count the connection against its user's cap).
	peer   interface{ PeerUID() (uint32, bool) }
	once   sync.Once
	uid    uint32
	uidErr error
}

type connInfoKey struct{}

func (c *connInfo) owner() string {
	c.once.Do(func() {
		if c.peer != nil {
			if uid, ok := c.peer.PeerUID(); ok {
				c.uid = uid
				return
			}
		}
		c.uid, c.uidErr = peercred.LoopbackUID(c.local, c.remote)
	})
	if c.uidErr != nil {
		return OwnerAnon
	}
	return fmt.Sprintf("uid:%d", c.uid)
}

// ConnContext is an http.Server's ConnContext: it stores the connection's
// addresses for the uid lookup of a loopback client, and the connection
// itself (or the one under a TLS connection) when it can tell the uid
// (PeerUID: the listener looks it up on the first read, before any
// request is parsed).
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{local: c.LocalAddr(), remote: c.RemoteAddr()}
	under := c
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		under = nc.NetConn()
	}
	if p, ok := under.(interface{ PeerUID() (uint32, bool) }); ok {
		ci.peer = p
	}
	return context.WithValue(ctx, connInfoKey{}, ci)
}

// remoteIP is the request's source address without the port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// failKey is whom failed authentications count against: the remote
// address, and on loopback, where every local user shares it, the local
// user too.
func failKey(r *http.Request) string {
	ip := remoteIP(r)
	if ci, ok := r.Context().Value(connInfoKey{}).(*connInfo); ok && loopback.Request(r) {
		return ip + " " + ci.owner()
	}
	return ip
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

// Authenticate finds the request's principal. ok false means the request
// must be refused with 401 (why says what to do). An accepted API key's
// use is remembered (LastUsed).
func (g *Guard) Authenticate(r *http.Request) (p Principal, ok bool, why string) {
	tok := bearer(r)
	local := loopback.Request(r)
	if tok != "" {
		if k, found := g.Lookup(tok); found {
			g.uses.touch(k.Name, time.Now().UTC().Truncate(time.Second))
			perms := ScopePerms(k.Scope)
			if local && !g.cfg.RequireToken {
				// A key never gives less than no key would on this
				// machine (below): an inference key still reads status.
				perms |= Read | Inference
			}
			return Principal{Perms: perms, Owner: keyOwner(k), keyHash: k.Hash}, true, ""
		}
		if local && tokenEqual(tok, g.cfg.AdminKey) {
			return Principal{Perms: Admin | Read | Inference, Owner: OwnerAdmin}, true, ""
		}
	}
	if local && !g.cfg.RequireToken {
		// A bearer that is not a valid key counts as no credential, as
		// llama-server without --api-key does: OpenAI clients always send
		// some key.
		owner := OwnerAnon
		if ci, ok := r.Context().Value(connInfoKey{}).(*connInfo); ok {
			owner = ci.owner()
		}
		return Principal{Perms: Read | Inference, Owner: owner}, true, ""
	}
	switch {
	case tok == "" && local:
		return Principal{}, false, "this node requires a credential from every client (--require-token): an API key (rbee apikey create) or, for the node's user, the admin key (rbee token --admin), as Authorization: Bearer"
	case tok == "":
		return Principal{}, false, "clients off this node's machine need an API key: Authorization: Bearer <key> (CLI: --token or RBEE_TOKEN; an admin creates one with `rbee apikey create`)"
	case tokenEqual(tok, g.cfg.Secret):
		return Principal{}, false, "the cluster secret joins nodes and is no API credential: use an API key (`rbee apikey create` on a node)"
	}
	return Principal{}, false, "the credential was refused"
}

// openAnswers are the requests of API keys still being answered, so that
// a revoked key's long answers end.
type openAnswers struct {
	mu   sync.Mutex
	reqs map[*openAnswer]struct{}
}

type openAnswer struct {
	hash   string
	cancel context.CancelFunc
}

// add records a request of the key with hash; its context ends when done
// is called or the key is revoked.
func (o *openAnswers) add(parent context.Context, hash string) (ctx context.Context, done func()) {
	ctx, cancel := context.WithCancel(parent)
	a := &openAnswer{hash: hash, cancel: cancel}
	o.mu.Lock()
	if o.reqs == nil {
		o.reqs = map[*openAnswer]struct{}{}
	}
	o.reqs[a] = struct{}{}
	o.mu.Unlock()
	return ctx, func() {
		o.mu.Lock()
		delete(o.reqs, a)
		o.mu.Unlock()
		cancel()
	}
}

// EndRevoked ends the answers still going to API keys that are no longer
// in the registry: the node calls it when the registry changes, so a
// revoked key stops receiving an event stream or a completion at once, as
// its next request is refused. It returns how many it ended.
func (g *Guard) EndRevoked() int {
	g.open.mu.Lock()
	defer g.open.mu.Unlock()
	if len(g.open.reqs) == 0 || g.cfg.Node == nil {
		return 0
	}
	keep := map[string]bool{}
	for _, k := range g.cfg.Node.APIKeys() {
		keep[k.Hash] = true
	}
	n := 0
	for a := range g.open.reqs {
		if !keep[a.hash] {
			a.cancel()
			delete(g.open.reqs, a)
			n++
		}
	}
	if n > 0 {
		g.cfg.Logger.Info("ended answers to a revoked API key", "answers", n)
	}
	return n
}

// keyOwner is the job owner of API key k: its name, for a person reading
// it, and the start of its hash, since a name is reused once its key is
// revoked and the new key's holder must not see the old key's jobs.
func keyOwner(k fsm.APIKey) string {
	h := k.Hash
	if len(h) > 16 {
		h = h[:16]
	}
	return "key:" + k.Name + "#" + h
}

// Wrap is the API's outer layer around routes: it refuses requests a
// browser could be made to send on a website's behalf (foreign Host: DNS
// rebinding; foreign Origin; form content types), authenticates the
// caller, checks the route's permission and passes the principal on in
// the request's context (FromContext). /health is open to everyone: it
// says only "up".
func (g *Guard) Wrap(routes http.Handler) http.Handler {
	fail := apierror.Write
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// No answer is a script or a style sheet: a browser must not run
		// one (text/plain /metrics, say) as another site's <script>; nor
		// may another site's page load one at all without CORS (its
		// status and timing would tell that page about the cluster).
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cross-Origin-Resource-Policy", "same-origin")
		// Answers can hold secrets (apikey_create's result, in the job and
		// its events): no browser or proxy keeps a copy. A route that may
		// be cached (the page's assets) sets its own.
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path == "/health" {
			routes.ServeHTTP(w, r)
			return
		}
		if !g.HostAllowed(r.Host) {
			fail(w, http.StatusForbidden, jobs.CodeForbidden, "request Host "+quoteShort(r.Host)+" is not one of this node's names or addresses (add it with --allowed-host)")
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if !g.OriginAllowed(o, r.Host) {
				fail(w, http.StatusForbidden, jobs.CodeForbidden, "cross-origin request from "+quoteShort(o)+" refused (allow an origin with --cors-origin)")
				return
			}
			w.Header().Set("Access-Control-Allow-Origin", o)
			w.Header().Add("Vary", "Origin")
			// Headers a page may read from an answer besides the safe
			// ones: a job's id, when to retry.
			w.Header().Set("Access-Control-Expose-Headers", "X-Rbee-Job-Id, Retry-After")
			if r.Method == http.MethodOptions {
				// A preflight: the browser asks before it sends a request
				// with a JSON body or an Authorization header. The origin
				// is allowed, so the headers it asks for are too (OpenAI's
				// SDKs send their own X-Stainless-* headers); what a header
				// may do is the routes' business, as for any client.
				w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
				w.Header().Set("Access-Control-Allow-Headers", preflightHeaders(r.Header.Get("Access-Control-Request-Headers")))
				w.Header().Add("Vary", "Access-Control-Request-Headers")
				w.Header().Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
		}
		if !jsonOrNoBody(r) {
			fail(w, http.StatusUnsupportedMediaType, jobs.CodeBadRequest, "this route takes application/json, not "+quoteShort(r.Header.Get("Content-Type")))
			return
		}
		need, public := g.cfg.Routes(r)
		if public {
			routes.ServeHTTP(w, r)
			return
		}
		// A valid credential is always accepted: failures from an
		// address (a NAT's, a proxy's, loopback's) must not lock out the
		// other clients behind it, nor the node's own CLI. Credentials are
		// random 256-bit values, so the limit is not what stops a guess;
		// it keeps a failing client from flooding the log and gets it a
		// 429 to back off. On loopback the address is the local user.
		p, ok, why := g.Authenticate(r)
		if !ok {
			who, now := failKey(r), time.Now()
			if g.fails.blocked(who, now) {
				w.Header().Set("Retry-After", fmt.Sprint(int(failWindow.Seconds())))
				fail(w, http.StatusTooManyRequests, CodeTooManyFailures, "too many failed authentications from this address; try again later")
				return
			}
			if bearer(r) != "" {
				g.fails.failed(who, now)
				// The presented value is never logged.
				g.cfg.Logger.Warn("api authentication failed", "remote", remoteIP(r), "path", r.URL.Path)
			}
			fail(w, http.StatusUnauthorized, CodeUnauthorized, why)
			return
		}
		if !p.Can(need) {
			fail(w, http.StatusForbidden, jobs.CodeForbidden, NeedMessage(need, r.Method+" "+r.URL.Path))
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		if p.keyHash != "" {
			// An answer to an API key (an event stream, the cluster
			// feed, a streamed completion) ends when the key is revoked
			// (EndRevoked), not when the client hangs up.
			var done func()
			ctx, done = g.open.add(ctx, p.keyHash)
			defer done()
		}
		routes.ServeHTTP(w, r.WithContext(ctx))
	})
}

// baseAllowHeaders are the request headers every allowed origin may send.
const baseAllowHeaders = "Authorization, Content-Type, Last-Event-ID"

// preflightHeaders is the Access-Control-Allow-Headers answer to a
// preflight asking for requested (a comma-separated list): the base ones
// plus each requested name that is an HTTP token, at most 64 of them.
func preflightHeaders(requested string) string {
	out := baseAllowHeaders
	n := 0
	for _, h := range strings.Split(requested, ",") {
		h = strings.TrimSpace(h)
		if h == "" || !headerToken(h) || n == 64 {
			continue
		}
		out += ", " + h
		n++
	}
	return out
}

// headerToken reports whether h is an HTTP token (RFC 9110), so a header
// name that can be echoed safely.
func headerToken(h string) bool {
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return h != ""
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

// Failure limits: a source address that fails failLimit times within
// failWindow gets 429 until the window ends. Ten tries a minute are plenty
// for a person retyping a key and nothing for a guesser.
const (
	failLimit  = 10
	failWindow = time.Minute
	// failMaxAddrs bounds the table; past it the oldest windows go.
	failMaxAddrs = 4096
)

// limiter counts failed authentications per source address.
type limiter struct {
	mu   sync.Mutex
	fail map[string]*failState
}

type failState struct {
	start time.Time
	n     int
}

func newLimiter() *limiter {
	return &limiter{fail: map[string]*failState{}}
}

// blocked reports whether addr has used up its failures.
func (l *limiter) blocked(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.fail[addr]
	return s != nil && now.Sub(s.start) < failWindow && s.n >= failLimit
}

// failed records a failure of addr.
func (l *limiter) failed(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.fail[addr]
	if s == nil || now.Sub(s.start) >= failWindow {
		if s == nil && len(l.fail) >= failMaxAddrs {
			for k, v := range l.fail {
				if now.Sub(v.start) >= failWindow {
					delete(l.fail, k)
				}
			}
			if len(l.fail) >= failMaxAddrs {
				return // a flood of addresses: keep the ones already counted
			}
		}
		s = &failState{start: now}
		l.fail[addr] = s
	}
	s.n++
}
