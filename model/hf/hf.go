// Package hf is a client for the Hugging Face Hub as the official
// huggingface_hub Python client speaks it, reduced to what rbee needs to
// fetch GGUF models: the repo tree API (files, sizes, LFS sha256), the
// resolve endpoint (HEAD for metadata, GET with redirects to a CDN), gated
// and missing repo errors, and a resumable, verified downloader that is also
// used for plain URLs and peer-to-peer copies (Transfer).
//
// A Client is safe for concurrent use. It never reads the environment: the
// caller passes the endpoint (HF_ENDPOINT or DefaultEndpoint) and the token
// (HF_TOKEN).
package hf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/redirectguard"
)

// DefaultEndpoint is the public Hub.
const DefaultEndpoint = "https://huggingface.co"

// DefaultRevision is the branch used when a ref names none.
const DefaultRevision = "main"

const (
	// maxTreeBytes caps one page of the tree API. Real pages of 1000 entries
	// are ~300 KiB; 16 MiB leaves room and still bounds a hostile server.
	maxTreeBytes = 16 << 20
	// maxTreePages caps pagination (1000 entries per page upstream), so a
	// server returning endless "next" links cannot loop us forever.
	maxTreePages = 100
	// maxTreeEntries caps the entries (files and directories) of one
	// listing: a GGUF repo has tens, the largest model repos some
	// thousands. Without it 100 pages of 16 MiB of tiny entries would be
	// held as ~40 million Files (gigabytes) before a GGUF is picked.
	maxTreeEntries = 100_000
	// maxTreeTotal caps the bytes of all the pages of one listing: 100,000
	// entries of a few hundred bytes are some 30 MiB. Without it 100 pages
	// of 16 MiB of padding (no entries at all) would be fetched, 1.6 GB for
	// one model_download's listing.
	maxTreeTotal = 64 << 20
	// listWaits bounds a whole listing to this many APITimeouts (10 min by
	// default): the Hub lists 100 pages in well under two minutes, and a
	// server that answers each page just before the timeout must not hold
	// a job for 100 of them.
	listWaits = 10
	// maxRedirects matches the net/http default and is far more than the
	// Hub's one hop to the CDN (plus a relative one for renamed repos).
	maxRedirects = 10
	// maxErrorBody caps the bytes of an error response read for its message.
	maxErrorBody = 4 << 10
	// DefaultAPITimeout bounds one metadata request (a page of the tree
	// API, a HEAD of a file), its body included: the Hub answers them in
	// well under a second, and a server that accepts the connection and
	// never answers must not hold a download job forever. (Downloads
	// themselves have no deadline, only Spec.IdleTimeout.)
	DefaultAPITimeout = 60 * time.Second
)

// Sentinel errors. Functions wrap them with %w and add context.
var (
	// ErrNotFound: the repo, revision or file does not exist (HTTP 404, or
	// 401 with X-Error-Code RepoNotFound, which the Hub answers for missing
	// and private repos alike).
	ErrNotFound = errors.New("hf: not found")
	// ErrGated: the Hub refused access (401/403). The message tells the user
	// what to do.
	ErrGated = errors.New("hf: gated repo: accept its licence on the website and set HF_TOKEN")
	// ErrNoGGUF: the repo holds no GGUF file matching the request.
	ErrNoGGUF = errors.New("hf: no matching GGUF file")
	// ErrBadRepo: a repo id, revision or file path is malformed.
	ErrBadRepo = errors.New("hf: bad repo id or path")
	// ErrHTTP: an unexpected HTTP status or malformed response.
	ErrHTTP = errors.New("hf: unexpected response")
	// ErrChecksum: the downloaded bytes do not have the expected sha256 (or
	// size); the partial file has been deleted.
	ErrChecksum = errors.New("hf: checksum mismatch")
	// ErrNoSpace: the destination file system has not enough free space.
	ErrNoSpace = errors.New("hf: not enough disk space")
	// ErrTooLarge: the file is over the transfer's MaxSize.
	ErrTooLarge = errors.New("hf: file too large")
	// ErrBadRange: the server answered a range request with an inconsistent
	// Content-Range.
	ErrBadRange = errors.New("hf: bad range response")
	// ErrRedirect: a server redirected a request where the client does not
	// follow: to a local or private address of a host other than the one
	// the request started at, to a scheme other than http(s), or from https
	// to http (see internal/redirectguard). It is not retried.
	ErrRedirect = errors.New("hf: redirect refused")
	// ErrStalled: a download attempt ended because its source sent nothing
	// for Spec.IdleTimeout, or less than Spec.MinBytes in a
	// Spec.RateWindow. Transfer retries it (it is Retryable).
	ErrStalled = errors.New("hf: the source stalled")
)

// Config configures a Client. Start from DefaultConfig and override fields.
type Config struct {
	// Endpoint is the Hub base URL, without trailing slash
	// (HF_ENDPOINT in huggingface_hub; DefaultEndpoint otherwise).
	Endpoint string
	// Token is a Hub access token (HF_TOKEN). When set it is sent as
	// "Authorization: Bearer <token>" to the Endpoint host only, never to
	// the CDN hosts downloads are redirected to.
	Token string
	// UserAgent is sent with every request.
	UserAgent string
	// HTTPClient is the transport to use; nil means one like
	// http.DefaultClient. Its CheckRedirect is replaced (a shallow copy is
	// made) to enforce the Authorization rule above and the redirect rule
	// of internal/redirectguard; a Transport that is nil or an
	// *http.Transport is copied with the guard's dial check (another
	// RoundTripper is used as it is: it decides where it connects).
	HTTPClient *http.Client
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// APITimeout bounds each metadata request (tree page, HEAD); 0 means
	// DefaultAPITimeout.
	APITimeout time.Duration
}

// DefaultConfig returns a Config for the public Hub without a token.
func DefaultConfig() Config {
	return Config{Endpoint: DefaultEndpoint, UserAgent: "rbee (huggingface_hub-compatible)"}
}

// Client talks to one Hub endpoint. It is safe for concurrent use.
type Client struct {
	endpoint *url.URL
	token    string
	ua       string
	http     *http.Client
	log      *slog.Logger
	apiWait  time.Duration
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	u, err := url.Parse(strings.TrimRight(cfg.Endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: endpoint %q is not an http(s) URL", ErrBadRepo, cfg.Endpoint)
	}
	if strings.ContainsAny(cfg.Token, "\r\n") {
		return nil, fmt.Errorf("hf: token contains a line break")
	}
	c := &Client{endpoint: u, token: cfg.Token, ua: cfg.UserAgent, log: cfg.Logger, apiWait: cfg.APITimeout}
	if c.apiWait <= 0 {
		c.apiWait = DefaultAPITimeout
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	hc := http.Client{}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	switch tr := hc.Transport.(type) {
	case nil:
		hc.Transport = redirectguard.Transport(nil)
	case *http.Transport:
		hc.Transport = redirectguard.Transport(tr)
	}
	hc.CheckRedirect = checkRedirect
	c.http = &hc
	return c, nil
}

// checkRedirect follows up to maxRedirects redirects where
// redirectguard.CheckRedirect allows, and drops the Authorization header
// whenever the target host (with port) differs from the first request's,
// as huggingface_hub (via requests' rebuild_auth) does: the Hub redirects
// LFS downloads to a CDN that must not see the user's token.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", ErrHTTP, maxRedirects)
	}
	if err := redirectguard.CheckRedirect(req, via); err != nil {
		return err
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		req.Header.Del("Authorization")
	}
	return nil
}

// Endpoint returns the Hub base URL the client talks to.
func (c *Client) Endpoint() string { return c.endpoint.String() }

// HTTPClient returns the http.Client the Client uses (with its redirect
// policy), for plain URL downloads that should share the transport.
func (c *Client) HTTPClient() *http.Client { return c.http }

// repo ids: huggingface_hub's validate_repo_id (REPO_ID_REGEX, no "--" or "..").
var repoPartRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_.-]{1,96}$`) })

// ValidateRepoID checks a repo id "org/name" (or "name") the way
// huggingface_hub's validate_repo_id does.
func ValidateRepoID(repo string) error {
	parts := strings.Split(repo, "/")
	if len(parts) > 2 || repo == "" {
		return fmt.Errorf("%w: repo id %q must be ORG/NAME", ErrBadRepo, repo)
	}
	if strings.Contains(repo, "--") || strings.Contains(repo, "..") {
		return fmt.Errorf("%w: repo id %q must not contain \"--\" or \"..\"", ErrBadRepo, repo)
	}
	for _, p := range parts {
		if !repoPartRE().MatchString(p) || strings.HasPrefix(p, "-") || strings.HasPrefix(p, ".") ||
			strings.HasSuffix(p, "-") || strings.HasSuffix(p, ".") {
			return fmt.Errorf("%w: repo id %q: %q must be 1-96 of [A-Za-z0-9_.-], not starting or ending with - or .", ErrBadRepo, repo, p)
		}
	}
	return nil
}

// ValidatePath checks a file path inside a repo: relative, "/"-separated,
// no empty, "." or ".." segments, no backslash or control characters.
func ValidatePath(p string) error {
	if p == "" || len(p) > 1024 {
		return fmt.Errorf("%w: file path must have 1..1024 bytes", ErrBadRepo)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return fmt.Errorf("%w: file path %q contains a control character or backslash", ErrBadRepo, p)
		}
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: file path %q has an empty, \".\" or \"..\" segment", ErrBadRepo, p)
		}
	}
	return nil
}

func validateRevision(rev string) error {
	if rev == "" || len(rev) > 256 || strings.ContainsAny(rev, "\x00\r\n") || strings.Contains(rev, "..") {
		return fmt.Errorf("%w: revision %q", ErrBadRepo, rev)
	}
	return nil
}

// escapePath escapes each segment of a repo file path, keeping the slashes.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// ResolveURL returns {endpoint}/{repo}/resolve/{revision}/{path}, the URL
// huggingface_hub's hf_hub_url builds (revision escaped as one segment, so
// "refs/pr/1" becomes "refs%2Fpr%2F1").
func (c *Client) ResolveURL(repo, revision, path string) string {
	return c.endpoint.String() + "/" + repo + "/resolve/" + url.PathEscape(revision) + "/" + escapePath(path)
}

// File is one file of a repo, as the tree API lists it.
type File struct {
	// Path is the path inside the repo ("sub/dir/model.gguf").
	Path string `json:"path"`
	// Size is the file size in bytes (the LFS object size for LFS files).
	Size int64 `json:"size"`
	// SHA256 is the LFS object id (lower-case hex sha256 of the content), or
	// "" for files stored in git directly.
	SHA256 string `json:"sha256,omitempty"`
	// BlobID is the git blob id (sha1 of the git object).
	BlobID string `json:"blob_id,omitempty"`
}

type treeEntry struct {
	Type string `json:"type"`
	Oid  string `json:"oid"`
	Size int64  `json:"size"`
	Path string `json:"path"`
	LFS  *struct {
		Oid  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

var sha256RE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{64}$`) })

// ListFiles lists every file of repo at revision with the tree API
// (GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true),
// following the Link rel="next" pagination as huggingface_hub's
// paginate() does. Directories are omitted.
func (c *Client) ListFiles(ctx context.Context, repo, revision string) ([]File, error) {
	if err := ValidateRepoID(repo); err != nil {
		return nil, err
	}
	if err := validateRevision(revision); err != nil {
		return nil, err
	}
	outer := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, listWaits*c.apiWait, errListTimeout)
	defer cancel()
	files, err := c.listFiles(ctx, repo, revision)
	if err != nil && outer.Err() == nil && errors.Is(context.Cause(ctx), errListTimeout) {
		return nil, fmt.Errorf("%w: listing the tree of %s took more than %s; name the file (hf:%s/FILE.gguf)", ErrHTTP, repo, listWaits*c.apiWait, repo)
	}
	return files, err
}

// errListTimeout is the cancellation cause of a listing that ran past
// listWaits APITimeouts.
var errListTimeout = errors.New("hf: listing took too long")

// listFiles is ListFiles within its deadline.
func (c *Client) listFiles(ctx context.Context, repo, revision string) ([]File, error) {
	next := c.endpoint.String() + "/api/models/" + repo + "/tree/" + url.PathEscape(revision) + "?recursive=true"
	var files []File
	seen := 0
	budget := int64(maxTreeTotal) // bytes the listing's pages may still take
	for page := 0; next != ""; page++ {
		if page >= maxTreePages {
			return nil, fmt.Errorf("%w: tree of %s has more than %d pages", ErrHTTP, repo, maxTreePages)
		}
		var link string
		var base *url.URL
		entries, err := apiRetry(ctx, func() ([]treeEntry, time.Duration, error) {
			var (
				es    []treeEntry
				after time.Duration
				err   error
			)
			es, link, base, after, err = c.treePage(ctx, next, repo, revision, &budget)
			return es, after, err
		})
		if err != nil {
			return nil, err
		}
		if seen += len(entries); seen > maxTreeEntries {
			return nil, fmt.Errorf("%w: the tree of %s has more than %d entries; name the file (hf:%s/FILE.gguf)", ErrHTTP, repo, maxTreeEntries, repo)
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			if ValidatePath(e.Path) != nil || e.Size < 0 {
				c.log.Debug("hf: skipping malformed tree entry", "repo", repo, "path", e.Path)
				continue
			}
			f := File{Path: e.Path, Size: e.Size, BlobID: e.Oid}
			if e.LFS != nil {
				oid := strings.ToLower(e.LFS.Oid)
				if sha256RE().MatchString(oid) {
					f.SHA256 = oid
				}
				if e.LFS.Size > 0 {
					f.Size = e.LFS.Size
				}
			}
			files = append(files, f)
		}
		next, err = nextLink(link, base)
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// errAPITimeout is the cancellation cause of a metadata request that ran
// past the client's APITimeout.
var errAPITimeout = errors.New("hf: no answer in time")

// apiContext bounds one metadata request by the client's APITimeout.
func (c *Client) apiContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, c.apiWait, errAPITimeout)
}

// apiError says so when err came from a metadata request that ran out of
// time (actx's own deadline, not the caller's ctx).
func (c *Client) apiError(ctx, actx context.Context, err error, what string) error {
	if ctx.Err() == nil && errors.Is(context.Cause(actx), errAPITimeout) {
		return fmt.Errorf("%w: %s: the Hub at %s did not answer within %s", ErrHTTP, what, c.endpoint.Host, c.apiWait)
	}
	return err
}

// treePage fetches and decodes one page of the tree API within the API
// timeout; it returns the entries, the Link header and the URL the page
// came from (after redirects). The bytes it reads come off *budget (the
// listing's), and a page that would take more is refused. A failure worth
// repeating (the Hub unreachable, 5xx, 429) is Retryable, with the wait
// the Hub asked for.
func (c *Client) treePage(ctx context.Context, target, repo, revision string, budget *int64) ([]treeEntry, string, *url.URL, time.Duration, error) {
	actx, cancel := c.apiContext(ctx)
	defer cancel()
	resp, err := c.do(actx, http.MethodGet, target, nil, true)
	if err != nil {
		if errors.Is(context.Cause(actx), errAPITimeout) || ctx.Err() != nil || errors.Is(err, ErrRedirect) {
			return nil, "", nil, 0, c.apiError(ctx, actx, err, "tree of "+repo)
		}
		return nil, "", nil, 0, Retryable(err)
	}
	defer resp.Body.Close()
	if err := c.checkStatus(resp, "repo "+repo+"@"+revision); err != nil {
		if !retryableStatus(resp.StatusCode) {
			return nil, "", nil, 0, err
		}
		after, err := retryLater(resp, err, "the Hub", maxAPIRetryAfter)
		return nil, "", nil, after, err
	}
	var entries []treeEntry
	body := &io.LimitedReader{R: resp.Body, N: min(maxTreeBytes, *budget)}
	err = json.NewDecoder(body).Decode(&entries)
	*budget -= min(maxTreeBytes, *budget) - body.N
	if err != nil && *budget <= 0 {
		return nil, "", nil, 0, fmt.Errorf("%w: the tree of %s takes more than %d bytes in all; name the file (hf:%s/FILE.gguf)", ErrHTTP, repo, maxTreeTotal, repo)
	}
	if err != nil {
		return nil, "", nil, 0, c.apiError(ctx, actx, fmt.Errorf("%w: tree of %s: %v", ErrHTTP, repo, err), "tree of "+repo)
	}
	return entries, resp.Header.Get("Link"), resp.Request.URL, 0, nil
}

const (
	// apiRetries: a metadata request that failed in a way worth repeating
	// (unreachable, 5xx, 429) is tried this many more times, as a file
	// download is (DefaultRetries); the Hub rate-limits anonymous users
	// with 429s.
	apiRetries = DefaultRetries
	// apiRetryBackoff is the first pause before a repeat; it doubles.
	apiRetryBackoff = 500 * time.Millisecond
	// maxAPIRetryAfter: a Retry-After up to this long is waited for; a
	// longer one fails the request at once, saying how long the Hub asked.
	maxAPIRetryAfter = 10 * time.Second
)

// apiRetry runs call until it succeeds, fails in a way not worth
// repeating, or has been repeated apiRetries times, pausing between tries
// (doubling, or the wait call asked for when that is longer).
func apiRetry[T any](ctx context.Context, call func() (T, time.Duration, error)) (T, error) {
	backoff := apiRetryBackoff
	for attempt := 0; ; attempt++ {
		v, after, err := call()
		if err == nil || !isRetryable(err) || attempt >= apiRetries || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(max(backoff, after)):
		}
		backoff *= 2
	}
}

// retryLater is the error of an answer whose status is worth a retry
// (err, from checkStatus): Retryable, with the wait its Retry-After asks
// for, or, when that wait is over limit, err saying how long who (the
// server) asked for, not retryable.
func retryLater(resp *http.Response, err error, who string, limit time.Duration) (time.Duration, error) {
	after := retryAfter(resp)
	if after > limit {
		return 0, fmt.Errorf("%w (%s asks to wait %s before trying again)", err, who, after)
	}
	return after, retryableAfter(err, after)
}

// retryAfter is the wait a Retry-After header asks for (seconds or an
// HTTP date); 0 when absent or unreadable.
func retryAfter(resp *http.Response) time.Duration {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		if n > int64(365*24*time.Hour/time.Second) {
			n = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// nextLink extracts the rel="next" target of an RFC 8288 Link header,
// resolved against base. Only http(s) targets on the same host are followed.
func nextLink(h string, base *url.URL) (string, error) {
	for _, part := range strings.Split(h, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, "<") {
			continue
		}
		end := strings.Index(part, ">")
		if end < 0 {
			continue
		}
		isNext := false
		for _, p := range strings.Split(part[end+1:], ";") {
			p = strings.ReplaceAll(strings.TrimSpace(p), " ", "")
			if p == `rel="next"` || p == "rel=next" {
				isNext = true
			}
		}
		if !isNext {
			continue
		}
		u, err := base.Parse(part[1:end])
		if err != nil || u.Host != base.Host {
			return "", fmt.Errorf("%w: bad pagination link %q", ErrHTTP, part[1:end])
		}
		return u.String(), nil
	}
	return "", nil
}

// Metadata is what a HEAD on the resolve URL tells about a file, as
// huggingface_hub's get_hf_file_metadata reads it.
type Metadata struct {
	// Commit is X-Repo-Commit: the commit the revision resolved to.
	Commit string
	// ETag is X-Linked-Etag (LFS files: the sha256) or else ETag, with
	// quotes and the W/ prefix removed.
	ETag string
	// SHA256 is ETag when it has the form of a sha256 (LFS files), else "".
	SHA256 string
	// Size is X-Linked-Size, or else Content-Length; -1 when unknown.
	Size int64
	// Location is where the content is served: the redirect target (the CDN
	// URL) for LFS files, or the resolve URL itself.
	Location string
}

// FileMetadata sends HEAD {endpoint}/{repo}/resolve/{revision}/{path}
// without following redirects to other hosts (relative redirects, which the
// Hub uses for renamed repos, are followed), with Accept-Encoding: identity
// so Content-Length is the real size.
func (c *Client) FileMetadata(ctx context.Context, repo, revision, path string) (Metadata, error) {
	if err := ValidateRepoID(repo); err != nil {
		return Metadata{}, err
	}
	if err := validateRevision(revision); err != nil {
		return Metadata{}, err
	}
	if err := ValidatePath(path); err != nil {
		return Metadata{}, err
	}
	return apiRetry(ctx, func() (Metadata, time.Duration, error) {
		return c.fileMetadata(ctx, repo, revision, path)
	})
}

// fileMetadata is one try of FileMetadata: a failure worth repeating (the
// Hub unreachable, 5xx, 429) is Retryable, with the wait the Hub asked for.
func (c *Client) fileMetadata(ctx context.Context, repo, revision, path string) (Metadata, time.Duration, error) {
	target := c.ResolveURL(repo, revision, path)
	noFollow := *c.http
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for hop := 0; ; hop++ {
		actx, cancel := c.apiContext(ctx)
		req, err := c.newRequest(actx, http.MethodHead, target, true)
		if err != nil {
			cancel()
			return Metadata{}, 0, err
		}
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := noFollow.Do(req)
		if err != nil {
			timedOut := errors.Is(context.Cause(actx), errAPITimeout) || ctx.Err() != nil
			err = c.apiError(ctx, actx, requestError(http.MethodHead, target, err), "HEAD "+redact(target))
			cancel()
			if !timedOut && !errors.Is(err, ErrRedirect) {
				err = Retryable(err)
			}
			return Metadata{}, 0, err
		}
		cancel()
		resp.Body.Close()
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			loc, err := resp.Location()
			if err != nil {
				return Metadata{}, 0, fmt.Errorf("%w: redirect without Location from %s", ErrHTTP, target)
			}
			if loc.Host == req.URL.Host && hop < maxRedirects {
				// Relative redirect (renamed repo): follow it, keep the token.
				target = loc.String()
				continue
			}
			return metadataFrom(resp, loc.String()), 0, nil
		}
		if err := c.checkStatus(resp, repo+"/"+path+"@"+revision); err != nil {
			if !retryableStatus(resp.StatusCode) {
				return Metadata{}, 0, err
			}
			after, err := retryLater(resp, err, "the Hub", maxAPIRetryAfter)
			return Metadata{}, after, err
		}
		return metadataFrom(resp, target), 0, nil
	}
}

func metadataFrom(resp *http.Response, location string) Metadata {
	m := Metadata{Commit: resp.Header.Get("X-Repo-Commit"), Size: -1, Location: location}
	et := resp.Header.Get("X-Linked-Etag")
	if et == "" {
		et = resp.Header.Get("ETag")
	}
	m.ETag = normalizeETag(et)
	if sha256RE().MatchString(strings.ToLower(m.ETag)) {
		m.SHA256 = strings.ToLower(m.ETag)
	}
	sz := resp.Header.Get("X-Linked-Size")
	if sz == "" {
		sz = resp.Header.Get("Content-Length")
	}
	if n, err := strconv.ParseInt(sz, 10, 64); err == nil && n >= 0 {
		m.Size = n
	}
	return m
}

// normalizeETag removes the weak prefix and quotes, like huggingface_hub's
// _normalize_etag.
func normalizeETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

func (c *Client) newRequest(ctx context.Context, method, target string, auth bool) (*http.Request, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRepo, err)
	}
	// The chain may reach a local or private address on this host only.
	req, err := http.NewRequestWithContext(redirectguard.WithOrigin(ctx, u), method, target, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRepo, err)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	if auth && c.token != "" && req.URL.Host == c.endpoint.Host && req.URL.Scheme == c.endpoint.Scheme {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, method, target string, hdr http.Header, auth bool) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, target, auth)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, requestError(method, target, err)
	}
	return resp, nil
}

// requestError is the error of a request that got no answer: ErrRedirect
// with the guard's reason (not the URL redirected to, which may carry a
// signature) when the guard refused it, else err.
func requestError(method, target string, err error) error {
	if reason, ok := redirectguard.Reason(err); ok {
		return fmt.Errorf("%w: %s %s: %v", ErrRedirect, method, redact(target), reason)
	}
	return fmt.Errorf("hf: %s %s: %w", method, redact(target), err)
}

// redact drops the query of a URL for messages (CDN URLs carry signatures).
func redact(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i]
	}
	return s
}

// checkStatus maps Hub error answers to the sentinel errors, reading the
// X-Error-Code / X-Error-Message headers huggingface_hub's
// hf_raise_for_status reads. 2xx returns nil. The message (X-Error-Message,
// or the JSON body's "error") is quoted only from the endpoint's own host:
// an answer of the host a download was redirected to is not repeated.
func (c *Client) checkStatus(resp *http.Response, what string) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	code := resp.Header.Get("X-Error-Code")
	msg := ""
	hub := resp.Request == nil || (resp.Request.URL.Host == c.endpoint.Host && resp.Request.URL.Scheme == c.endpoint.Scheme)
	if hub {
		msg = resp.Header.Get("X-Error-Message")
	}
	if hub && msg == "" && resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		var j struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &j) == nil && j.Error != "" {
			msg = j.Error
		}
	}
	detail := ""
	if msg != "" {
		detail = ": " + msg
	}
	switch {
	case code == "GatedRepo":
		return fmt.Errorf("%w (%s, HTTP %d%s)", ErrGated, what, resp.StatusCode, detail)
	case code == "RepoNotFound" && (resp.StatusCode == 401 || resp.StatusCode == 403):
		return fmt.Errorf("%w: %s (HTTP %d: missing, or private and HF_TOKEN not set or not allowed%s)", ErrNotFound, what, resp.StatusCode, detail)
	case code == "RepoNotFound" || code == "EntryNotFound" || code == "RevisionNotFound" || resp.StatusCode == 404:
		return fmt.Errorf("%w: %s (HTTP %d%s)", ErrNotFound, what, resp.StatusCode, detail)
	case resp.StatusCode == 401 || resp.StatusCode == 403:
		return fmt.Errorf("%w (%s, HTTP %d%s)", ErrGated, what, resp.StatusCode, detail)
	}
	return fmt.Errorf("%w: %s: HTTP %d%s", ErrHTTP, what, resp.StatusCode, detail)
}

// retryable reports whether a request that failed with this status may
// succeed when repeated.
func retryableStatus(code int) bool {
	return code == http.StatusTooManyRequests || code >= 500
}
