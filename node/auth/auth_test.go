package auth_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/apierror"
	"github.com/rbee-project/rbee/node/auth"
)

const secret = "rbee_test-cluster-secret"

// keys is the registry's API keys as plain data.
type keys struct {
	mu   sync.Mutex
	list []fsm.APIKey
	ln   []net.Addr
}

func (k *keys) APIKeys() []fsm.APIKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]fsm.APIKey(nil), k.list...)
}

func (k *keys) ListenAddrs() []net.Addr { return k.ln }

// add creates a key of scope and returns it.
func (k *keys) add(name, scope string) string {
	key, hash := auth.NewAPIKey()
	k.mu.Lock()
	k.list = append(k.list, fsm.APIKey{Name: name, Scope: scope, Hash: hash})
	k.mu.Unlock()
	return key
}

// routes is a small route table of each kind.
func routes(r *http.Request) (auth.Perm, bool) {
	switch r.URL.Path {
	case "/public", "/v1/workers/heartbeat":
		return 0, true
	case "/infer":
		return auth.Inference, false
	case "/admin":
		return auth.Admin, false
	case "/jobs":
		return auth.Read | auth.Inference, false
	}
	return auth.Read, false
}

type fixture struct {
	g     *auth.Guard
	h     http.Handler
	keys  *keys
	admin string
}

func newFixture(t *testing.T, mod func(*auth.Config)) *fixture {
	t.Helper()
	k := &keys{ln: []net.Addr{&net.TCPAddr{IP: net.ParseIP("198.51.100.4"), Port: 7843}}}
	cfg := auth.Config{Name: "hive-a", AllowedHosts: []string{"rbee.lan", "203.0.113.9"}, CORSOrigins: []string{"http://chat.lan:3000"},
		AdminKey: auth.DeriveAdminKey(secret), Secret: secret, Routes: routes, Node: k}
	if mod != nil {
		mod(&cfg)
	}
	g := auth.New(cfg)
	// The route answers with the principal the guard passed on.
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := auth.FromContext(r.Context())
		fmt.Fprintf(w, "%s %d", p.Owner, p.Perms)
	})
	return &fixture{g: g, h: g.Wrap(inner), keys: k, admin: cfg.AdminKey}
}

type req struct {
	method, path, remote, host, tok, ctype, origin string
	acrh                                           string // Access-Control-Request-Headers
}

func (f *fixture) do(q req) (int, string, *httptest.ResponseRecorder) {
	if q.method == "" {
		q.method = "GET"
	}
	if q.remote == "" {
		q.remote = "127.0.0.1:40000"
	}
	if q.host == "" {
		q.host = "127.0.0.1:7833"
	}
	body := ""
	if q.ctype != "" {
		body = "{}"
	}
	r := httptest.NewRequest(q.method, q.path, strings.NewReader(body))
	r.RemoteAddr, r.Host = q.remote, q.host
	if q.tok != "" {
		r.Header.Set("Authorization", "Bearer "+q.tok)
	}
	if q.ctype != "" {
		r.Header.Set("Content-Type", q.ctype)
	}
	if q.origin != "" {
		r.Header.Set("Origin", q.origin)
	}
	if q.acrh != "" {
		r.Header.Set("Access-Control-Request-Headers", q.acrh)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	var e apierror.Body
	_ = json.Unmarshal(w.Body.Bytes(), &e)
	return w.Code, e.Error.Code, w
}

const lan = "192.0.2.7:5000"

// keyOwner is the job owner of the API key key named name.
func keyOwner(name, key string) string {
	return "key:" + name + "#" + auth.HashAPIKey(key)[:16]
}

// TestCredentials: who a request acts as, on and off loopback, for every
// kind of credential, and what each may reach.
func TestCredentials(t *testing.T) {
	f := newFixture(t, nil)
	adminKey := f.keys.add("ops", fsm.ScopeAdmin)
	infKey := f.keys.add("webui", fsm.ScopeInference)
	readKey := f.keys.add("prometheus", fsm.ScopeRead)
	cases := []struct {
		name, path, remote, tok string
		status                  int
		code, owner             string
	}{
		{"loopback, no credential, read", "/status", "", "", 200, "", "anon"},
		{"loopback, no credential, inference", "/infer", "", "", 200, "", "anon"},
		{"loopback, no credential, admin route", "/admin", "", "", 403, "forbidden", ""},
		{"loopback, an OpenAI client's dummy key", "/infer", "", "sk-whatever", 200, "", "anon"},
		{"loopback, dummy key, admin route", "/admin", "", "sk-whatever", 403, "forbidden", ""},
		{"loopback, cluster secret is no credential", "/admin", "", secret, 403, "forbidden", ""},
		{"loopback, admin key", "/admin", "", f.admin, 200, "", "admin"},
		{"lan, no credential", "/status", lan, "", 401, "unauthorized", ""},
		{"lan, admin key is loopback only", "/status", "192.0.2.8:1", f.admin, 401, "unauthorized", ""},
		{"lan, cluster secret", "/status", "192.0.2.9:1", secret, 401, "unauthorized", ""},
		{"lan, admin api key", "/admin", "192.0.2.10:1", adminKey, 200, "", keyOwner("ops", adminKey)},
		{"lan, inference key, inference", "/infer", "192.0.2.10:1", infKey, 200, "", keyOwner("webui", infKey)},
		{"lan, inference key, read", "/status", "192.0.2.10:1", infKey, 403, "forbidden", ""},
		{"lan, inference key, jobs", "/jobs", "192.0.2.10:1", infKey, 200, "", keyOwner("webui", infKey)},
		{"lan, inference key, admin", "/admin", "192.0.2.10:1", infKey, 403, "forbidden", ""},
		{"lan, read key, read", "/status", "192.0.2.10:1", readKey, 200, "", keyOwner("prometheus", readKey)},
		{"lan, read key, inference", "/infer", "192.0.2.10:1", readKey, 403, "forbidden", ""},
		{"lan, public route", "/public", "192.0.2.10:1", "", 200, "", ""},
		{"ipv6 loopback", "/status", "[::1]:40000", "", 200, "", "anon"},
		// On loopback a key gives no less than no key would.
		{"loopback, inference key, read", "/status", "127.0.0.1:40000", infKey, 200, "", keyOwner("webui", infKey)},
		{"loopback, inference key, admin", "/admin", "127.0.0.1:40000", infKey, 403, "forbidden", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, code, w := f.do(req{path: tc.path, remote: tc.remote, tok: tc.tok})
			require.Equal(t, tc.status, st, w.Body.String())
			require.Equal(t, tc.code, code)
			if st == 200 && tc.owner != "" {
				require.True(t, strings.HasPrefix(w.Body.String(), tc.owner+" "), w.Body.String())
			}
		})
	}
	// Refusals say what to do; the secret's says it is no credential, an
	// admin route's names the admin credential.
	_, _, w := f.do(req{path: "/status", remote: lan, tok: secret})
	require.Contains(t, w.Body.String(), "no API credential")
	require.NotContains(t, w.Body.String(), secret)
	_, _, w = f.do(req{path: "/admin", remote: lan, tok: infKey})
	require.Contains(t, w.Body.String(), "admin credential")
	_, _, w = f.do(req{path: "/infer", remote: lan, tok: readKey})
	require.Contains(t, w.Body.String(), "inference permission")
	// Last use is remembered per key name, never for refused ones.
	used := f.g.KeysUsed(map[string]bool{"webui": true, "ops": true, "prometheus": true})
	require.Contains(t, used, "webui")
	require.Contains(t, used, "ops")
	_, ok := f.g.LastUsed("prometheus")
	require.True(t, ok)
	// A key no longer in the registry (revoked) is forgotten.
	used = f.g.KeysUsed(map[string]bool{"webui": true})
	require.Equal(t, []string{"webui"}, slices.Collect(maps.Keys(used)))
	_, ok = f.g.LastUsed("ops")
	require.False(t, ok)
}

// TestRequireToken: with RequireToken a loopback client needs a
// credential too.
func TestRequireToken(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) { c.RequireToken = true })
	st, code, w := f.do(req{path: "/status"})
	require.Equal(t, 401, st)
	require.Equal(t, auth.CodeUnauthorized, code)
	require.Contains(t, w.Body.String(), "--require-token")
	st, _, _ = f.do(req{path: "/status", tok: "sk-whatever"})
	require.Equal(t, 401, st)
	st, _, _ = f.do(req{path: "/admin", tok: f.admin})
	require.Equal(t, 200, st)
	st, _, _ = f.do(req{path: "/public"})
	require.Equal(t, 200, st, "public routes need no credential")
}

// TestFailedAuthenticationsLimited: an address that keeps failing gets 429
// for its failures after the limit; a good key from that address is still
// accepted (the clients behind a NAT, the node's own CLI), and other
// addresses are not affected.
func TestFailedAuthenticationsLimited(t *testing.T) {
	f := newFixture(t, nil)
	good := f.keys.add("ops", fsm.ScopeAdmin)
	for i := 0; i < 10; i++ {
		st, _, _ := f.do(req{path: "/status", remote: lan, tok: fmt.Sprintf("rbk_guess%d", i)})
		require.Equal(t, 401, st)
	}
	st, body, w := f.do(req{path: "/status", remote: lan, tok: "rbk_guess10"})
	require.Equal(t, 429, st)
	require.Contains(t, body, auth.CodeTooManyFailures)
	require.NotEmpty(t, w.Header().Get("Retry-After"))
	st, _, _ = f.do(req{path: "/status", remote: lan, tok: good})
	require.Equal(t, 200, st, "a good key is accepted from a blocked address")
	st, _, _ = f.do(req{path: "/status", remote: "192.0.2.99:5000", tok: good})
	require.Equal(t, 200, st)
	// A request without a credential is no guess: it does not count.
	for i := 0; i < 20; i++ {
		f.do(req{path: "/status", remote: "192.0.2.50:1"})
	}
	st, _, _ = f.do(req{path: "/status", remote: "192.0.2.50:1", tok: good})
	require.Equal(t, 200, st)
}

// TestBrowserDefences: a foreign Host (DNS rebinding), a foreign Origin
// and a form content type are refused before authentication, even with
// the admin key; the node's names, addresses and allowed origins pass.
func TestBrowserDefences(t *testing.T) {
	f := newFixture(t, nil)
	hostname, _ := os.Hostname()
	cases := []struct {
		name                string
		host, origin, ctype string
		method, path        string
		status              int
	}{
		{"rebinding host", "evil.example:7833", "", "", "GET", "/status", 403},
		{"rebinding host on a public route", "evil.example", "", "", "GET", "/public", 403},
		{"unknown name", "example.com", "", "", "GET", "/status", 403},
		{"foreign origin", "", "https://evil.example", "", "GET", "/status", 403},
		{"null origin", "", "null", "", "GET", "/status", 403},
		{"origin of another port", "", "http://127.0.0.1:9999", "", "GET", "/status", 403},
		{"text/plain", "", "", "text/plain", "POST", "/infer", 415},
		{"form", "", "", "application/x-www-form-urlencoded", "POST", "/infer", 415},
		{"multipart", "", "", "multipart/form-data; boundary=x", "POST", "/infer", 415},
		{"bad content type", "", "", "a/b/c;;", "POST", "/infer", 415},
		{"json", "", "", "application/json", "POST", "/infer", 200},
		{"json suffix", "", "", "application/merge-patch+json", "POST", "/infer", 200},
		{"own origin", "127.0.0.1:7833", "http://127.0.0.1:7833", "", "GET", "/status", 200},
		{"cors origin", "", "http://chat.lan:3000", "", "GET", "/status", 200},
		{"allowed host", "rbee.lan:7833", "", "", "GET", "/status", 200},
		{"allowed host, trailing dot", "RBEE.lan.:7833", "", "", "GET", "/status", 200},
		{"allowed address", "203.0.113.9:7833", "", "", "GET", "/status", 200},
		{"listener address", "198.51.100.4:7843", "", "", "GET", "/status", 200},
		{"node name", "hive-a", "", "", "GET", "/status", 200},
		{"hostname", hostname, "", "", "GET", "/status", 200},
		{"localhost", "localhost:7833", "", "", "GET", "/status", 200},
		{"sub.localhost", "app.localhost", "", "", "GET", "/status", 200},
		{"ipv6 loopback", "[::1]:7833", "", "", "GET", "/status", 200},
		{"health from anywhere", "evil.example", "https://evil.example", "text/plain", "POST", "/health", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := tc.host
			if host == "" {
				host = "127.0.0.1:7833"
			}
			if tc.name == "empty host" {
				host = "example.com" // httptest.NewRequest's
				tc.status = 403
			}
			st, _, w := f.do(req{method: tc.method, path: tc.path, host: host, origin: tc.origin, ctype: tc.ctype, tok: f.admin})
			require.Equal(t, tc.status, st, w.Body.String())
			if tc.origin != "" && st == 200 && tc.path != "/health" {
				require.Equal(t, tc.origin, w.Header().Get("Access-Control-Allow-Origin"))
			}
			if st == 403 {
				require.Empty(t, w.Header().Get("Access-Control-Allow-Origin"))
			}
		})
	}
}

// TestCORSOriginForms: a --cors-origin matches the Origin a browser sends
// for it however it is written: case, a trailing slash, the scheme's
// default port; another port or scheme does not.
func TestCORSOriginForms(t *testing.T) {
	f := newFixture(t, func(c *auth.Config) {
		c.CORSOrigins = []string{"http://chat.lan:80", "HTTPS://Secure.LAN:443/", "http://[::1]:3000", "chrome-extension://abcdef"}
	})
	for _, tc := range []struct {
		origin string
		status int
	}{
		{"http://chat.lan", 200},
		{"https://secure.lan", 200},
		{"http://[::1]:3000", 200},
		{"chrome-extension://abcdef", 200},
		{"http://chat.lan:8080", 403},
		{"https://chat.lan", 403},
		{"http://secure.lan", 403},
		{"http://chat.lan.evil.example", 403},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			st, _, w := f.do(req{path: "/status", origin: tc.origin})
			require.Equal(t, tc.status, st, w.Body.String())
		})
	}
}

// TestResponseHeaders: every answer of the API, whatever the route and
// outcome, tells a browser not to sniff it into a script, not to hand it
// to another site's page (<script src>, <img src>, no-cors fetch), and not
// to keep it (a job's answer may hold a new API key).
func TestResponseHeaders(t *testing.T) {
	f := newFixture(t, nil)
	for _, q := range []req{
		{path: "/health"},
		{path: "/v1/cluster"},
		{path: "/metrics"},
		{path: "/"},
		{path: "/v1/cluster", host: "evil.example:7833"},
		{path: "/v1/cluster", origin: "http://evil.example"},
		{path: "/v1/cluster", remote: lan},
		{path: "/v1/cluster", remote: lan, tok: "rbk_wrong"},
		{method: "POST", path: "/v1/jobs", ctype: "text/plain"},
		{method: "OPTIONS", path: "/v1/jobs", origin: "http://chat.lan:3000"},
	} {
		t.Run(q.method+" "+q.path+" "+q.host+q.origin+q.remote, func(t *testing.T) {
			_, _, w := f.do(q)
			require.Equal(t, "nosniff", w.Header().Get("X-Content-Type-Options"))
			require.Equal(t, "same-origin", w.Header().Get("Cross-Origin-Resource-Policy"))
			require.Equal(t, "no-store", w.Header().Get("Cache-Control"))
		})
	}
}

// TestPreflight: a CORS preflight from an allowed origin is answered
// without a credential; from another origin it is refused.
func TestPreflight(t *testing.T) {
	f := newFixture(t, nil)
	st, _, w := f.do(req{method: "OPTIONS", path: "/infer", origin: "http://chat.lan:3000", remote: lan})
	require.Equal(t, 204, st)
	require.Equal(t, "http://chat.lan:3000", w.Header().Get("Access-Control-Allow-Origin"))
	require.Contains(t, w.Header().Get("Access-Control-Allow-Headers"), "Authorization")
	require.Contains(t, w.Header().Get("Access-Control-Allow-Methods"), "POST")
	// An SDK's own headers (OpenAI's JS SDK sends X-Stainless-*) are
	// allowed to an allowed origin; a name that is no HTTP token is not
	// echoed; a page may read the job id.
	st, _, w = f.do(req{method: "OPTIONS", path: "/infer", origin: "http://chat.lan:3000", remote: lan,
		acrh: "content-type, x-stainless-os,x-stainless-lang, bad header\r\nx: y"})
	require.Equal(t, 204, st)
	allow := w.Header().Get("Access-Control-Allow-Headers")
	require.Contains(t, allow, "x-stainless-os")
	require.Contains(t, allow, "x-stainless-lang")
	require.NotContains(t, allow, "bad header")
	require.Contains(t, w.Header().Get("Access-Control-Expose-Headers"), "X-Rbee-Job-Id")
	st, _, w = f.do(req{method: "OPTIONS", path: "/infer", origin: "https://evil.example", remote: lan, acrh: "x-stainless-os"})
	require.Equal(t, 403, st)
	require.Empty(t, w.Header().Get("Access-Control-Allow-Origin"))
	require.Empty(t, w.Header().Get("Access-Control-Allow-Headers"))
}

// TestRevokedKey: a key gone from the registry is refused at once.
func TestRevokedKey(t *testing.T) {
	f := newFixture(t, nil)
	k := f.keys.add("webui", fsm.ScopeInference)
	st, _, _ := f.do(req{path: "/infer", remote: lan, tok: k})
	require.Equal(t, 200, st)
	f.keys.mu.Lock()
	f.keys.list = nil
	f.keys.mu.Unlock()
	st, _, _ = f.do(req{path: "/infer", remote: lan, tok: k})
	require.Equal(t, 401, st)
	_, found := f.g.Lookup(k)
	require.False(t, found)
	_, found = f.g.Lookup("rbk_" + strings.Repeat("a", 300))
	require.False(t, found)
}

func TestPrincipalMayRead(t *testing.T) {
	admin := auth.Principal{Perms: auth.Admin, Owner: auth.OwnerAdmin}
	user := auth.Principal{Perms: auth.Read | auth.Inference, Owner: "uid:1000"}
	anon := auth.Principal{Perms: auth.Read | auth.Inference, Owner: auth.OwnerAnon}
	cases := []struct {
		p       auth.Principal
		owner   string
		listing bool
		want    bool
	}{
		{admin, "uid:1000", true, true},
		{admin, "key:x", false, true},
		{user, "uid:1000", true, true},
		{user, "uid:1001", false, false},
		{user, auth.OwnerAdmin, true, false},
		{anon, auth.OwnerAnon, false, true},
		{anon, auth.OwnerAnon, true, false},
		{auth.Principal{}, "", false, true},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.p.MayRead(tc.owner, tc.listing), "%+v %q listing=%v", tc.p, tc.owner, tc.listing)
	}
	require.Equal(t, "read or inference", (auth.Read | auth.Inference).String())
	require.Equal(t, auth.Admin|auth.Read|auth.Inference, auth.ScopePerms(fsm.ScopeAdmin))
	require.Equal(t, auth.Perm(0), auth.ScopePerms("root"))
}

// TestAdminKeyFile: the admin key is derived from the secret (the same on
// every node), kept 0600, and read back; a missing file is ErrNoAdminKey.
func TestAdminKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := auth.DeriveAdminKey(secret)
	require.Equal(t, k, auth.DeriveAdminKey(secret))
	require.NotEqual(t, k, auth.DeriveAdminKey(secret+"x"))
	require.True(t, strings.HasPrefix(k, "rbeeadm_"))
	require.NotContains(t, k, secret)
	_, err := auth.ReadAdminKey(dir)
	require.ErrorIs(t, err, auth.ErrNoAdminKey)
	require.NoError(t, auth.WriteAdminKey(dir, k))
	fi, err := os.Stat(filepath.Join(dir, auth.AdminKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	got, err := auth.ReadAdminKey(dir)
	require.NoError(t, err)
	require.Equal(t, k, got)
	// A loose mode is repaired.
	require.NoError(t, os.Chmod(filepath.Join(dir, auth.AdminKeyFile), 0o644))
	require.NoError(t, auth.WriteAdminKey(dir, k))
	fi, err = os.Stat(filepath.Join(dir, auth.AdminKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.NoError(t, os.WriteFile(filepath.Join(dir, auth.AdminKeyFile), []byte("\n"), 0o600))
	_, err = auth.ReadAdminKey(dir)
	require.ErrorIs(t, err, auth.ErrNoAdminKey)
}
