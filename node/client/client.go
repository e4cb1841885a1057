// Package client talks to a node's HTTP API: it submits jobs and follows
// their SSE event streams, reconnecting with Last-Event-ID when a stream
// breaks. A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/tlsca"
)

// maxSSELine bounds one SSE line: a result event carries at most a few MiB.
const maxSSELine = 8 << 20

// reconnects bounds how often one Follow reconnects a broken stream.
const reconnects = 5

// Sentinel errors.
var (
	// ErrJobFailed: the job ended with done "failed"; the error event's
	// code and message are in the wrapping *JobError.
	ErrJobFailed = errors.New("job failed")
	// ErrAPI: the node answered with a non-2xx status.
	ErrAPI = errors.New("node API error")
	// ErrNodeURL: the node URL is not http(s)://HOST[:PORT].
	ErrNodeURL = errors.New("not a node URL (--node or RBEE_NODE: http://HOST:PORT or https://HOST:PORT)")
	// ErrBadToken: the credential has a character no HTTP header can
	// carry (a line break or a space, say); nothing was sent.
	ErrBadToken = errors.New("the API key (--token or RBEE_TOKEN) cannot be sent: it has a space, a line break or another control character (copied with the end of its line?)")
	// ErrPlainHTTP: the credential would cross the network unencrypted
	// (Client.AllowPlainHTTP is off); nothing was sent.
	ErrPlainHTTP = errors.New("refusing to send the API key unencrypted over the network (a plain http:// node off this machine): use the node's HTTPS listener (https://…, the node's --https-addr), or --allow-plain-http for a node run with --insecure-http")
)

// JobError is a failed job's error event.
type JobError struct {
	Code    string
	Message string
}

func (e *JobError) Error() string { return fmt.Sprintf("%s (%s)", e.Message, e.Code) }
func (e *JobError) Unwrap() error { return ErrJobFailed }

// APIError is a non-2xx answer.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}
func (e *APIError) Unwrap() error { return ErrAPI }

// Client is a node API client.
type Client struct {
	Base  string
	Token string
	HTTP  *http.Client
	// AllowPlainHTTP lets Token go to an http:// node off this machine
	// (one run with --insecure-http), where anyone on the way reads it.
	AllowPlainHTTP bool
}

// IsLoopbackURL reports whether a node URL points at this machine
// (localhost or a loopback address).
func IsLoopbackURL(base string) bool { return loopback.URL(base) }

// CheckURL says what is wrong with base as a node URL: the scheme is
// http or https, a host follows, and nothing comes after host and port
// (the client adds the API's paths itself, /v1 included). The error
// suggests the URL the user likely meant.
func CheckURL(base string) error {
	u, err := url.Parse(base)
	switch {
	case base == "", err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host == "":
		return fmt.Errorf("node %q: %w", base, ErrNodeURL)
	case !strings.Contains(base, "://"):
		return fmt.Errorf("node %q: %w; did you mean http://%s?", base, ErrNodeURL, strings.TrimLeft(base, "/"))
	case err != nil:
		return fmt.Errorf("node %q: %w", base, ErrNodeURL)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.User != nil, u.Opaque != "":
		return fmt.Errorf("node %q: %w", base, ErrNodeURL)
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("node %q: %w; did you mean %s://%s?", base, ErrNodeURL, u.Scheme, u.Host)
	}
	return nil
}

// New makes a client for base (e.g. http://127.0.0.1:7833).
func New(base, token string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{}}
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	if err := CheckURL(c.Base); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.authorize(req); err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return reachError(c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSSELine))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return decodeAPIError(resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Encrypted reports whether a credential sent to u stays off the network
// in clear text: https, or a loopback host.
func Encrypted(u *url.URL) bool {
	return u.Scheme == "https" || loopback.Host(u.Hostname())
}

// authorize sets the request's bearer credential, if the client has one.
// It is not sent in clear text off this machine (ErrPlainHTTP, unless
// AllowPlainHTTP). A token no header can carry is refused here, with
// ErrBadToken, before Go's transport refuses it with an error that reads
// like an unreachable node; the token itself is never in the error.
func (c *Client) authorize(req *http.Request) error {
	if c.Token == "" {
		return nil
	}
	if !c.AllowPlainHTTP && !Encrypted(req.URL) {
		return ErrPlainHTTP
	}
	for i := 0; i < len(c.Token); i++ {
		if b := c.Token[i]; b <= ' ' || b == 0x7f {
			return ErrBadToken
		}
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	return nil
}

// reachError says why a request to the node at base got no answer: a
// certificate the client does not trust, or no node there.
func reachError(base string, err error) error {
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) || errors.Is(err, tlsca.ErrWrongCA) {
		return fmt.Errorf("the node at %s is not trusted: %w", base, err)
	}
	if errors.Is(err, http.ErrSchemeMismatch) {
		return fmt.Errorf("%s is a plain HTTP listener (a node's --http-addr), not HTTPS: use http://, or the node's HTTPS address (--https-addr): %w", base, err)
	}
	return fmt.Errorf("cannot reach the node at %s: %w (is `rbee node` running? set --node or RBEE_NODE)", base, err)
}

// plainToTLS is what Go's HTTPS server answers a plain HTTP request with.
const plainToTLS = "Client sent an HTTP request to an HTTPS server."

func decodeAPIError(status int, data []byte) error {
	if status == http.StatusBadRequest && strings.TrimSpace(string(data)) == plainToTLS {
		return &APIError{Status: status, Code: "http", Message: "this is a node's HTTPS listener (--https-addr): use an https:// URL for it, trusting the cluster CA (--ca or --ca-fingerprint)"}
	}
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		return &APIError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
	}
	// Not an rbee node's error (every route of a node answers in the
	// shape above): another server on that port, a proxy. Its page is
	// not the message: a short excerpt of its text is.
	return &APIError{Status: status, Code: "http", Message: "the server at --node did not answer as an rbee node's API (is it one?): " + excerpt(data)}
}

// maxExcerpt bounds the excerpt of a foreign answer in an error.
const maxExcerpt = 160

// excerpt is the text of a foreign answer for an error message: markup
// dropped, white space collapsed, control characters left out, at most
// maxExcerpt bytes.
func excerpt(data []byte) string {
	var b strings.Builder
	inTag, space := false, false
	for _, r := range string(data) {
		switch {
		case r == '<':
			inTag = true
		case r == '>' && inTag:
			inTag, space = false, b.Len() > 0
		case inTag:
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			space = b.Len() > 0
		case r < 0x20 || r == 0x7f || r == utf8.RuneError:
		default:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteRune(r)
		}
		if b.Len() >= maxExcerpt {
			return b.String() + "…"
		}
	}
	if b.Len() == 0 {
		return "(no text)"
	}
	return b.String()
}

// Submit starts a job. req is an api.Request (the usual case: its fields
// plus "operation" are sent), or any value that marshals to the whole job
// object.
func (c *Client) Submit(ctx context.Context, req any) (string, error) {
	var out struct {
		JobID string `json:"job_id"`
	}
	body, err := jobBody(req)
	if err != nil {
		return "", err
	}
	if err := c.checkOlderNode(ctx, body); err != nil {
		return "", err
	}
	if err := c.do(ctx, http.MethodPost, "/v1/jobs", body, &out); err != nil {
		return "", err
	}
	return out.JobID, nil
}

// checkOlderNode refuses a job that sets a field an older node would ignore
// (api.LooseIgnored) when the node does not say it refuses the fields it
// does not know (api.StrictJobsHeader): such a node would run the job
// without them. Only such jobs cost the extra round trip.
func (c *Client) checkOlderNode(ctx context.Context, job any) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	var head struct {
		Operation string `json:"operation"`
	}
	if json.Unmarshal(b, &head) != nil {
		return nil
	}
	fields := api.LooseIgnored(head.Operation, b)
	if len(fields) == 0 {
		return nil
	}
	if err := CheckURL(c.Base); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/api/version", nil)
	if err != nil {
		return err
	}
	// The key goes only where every request's goes (authorize).
	if err := c.authorize(req); err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return reachError(c.Base, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.Header.Get(api.StrictJobsHeader) != "" {
		return nil
	}
	list := strings.Join(fields, ", ")
	return &JobError{Code: jobs.CodeUpgradeRequired, Message: fmt.Sprintf("the node at %s runs an older rbee that would ignore %s of %s: upgrade it first, or send the job to an upgraded node (or leave %s out)",
		c.Base, list, head.Operation, list)}
}

// jobBody is what Submit sends for req.
func jobBody(req any) (any, error) {
	if r, ok := req.(api.Request); ok {
		b, err := api.Encode(r)
		if err != nil {
			return nil, err
		}
		return json.RawMessage(b), nil
	}
	return req, nil
}

// Cancel cancels a job.
func (c *Client) Cancel(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/jobs/"+id, nil, nil)
}

// follower passes a job's events on and remembers where it is and how
// the job ended.
type follower struct {
	fn     func(jobs.Event) error
	last   int64 // the last event's sequence number
	jobErr *JobError
}

func (f *follower) event(ev jobs.Event) error {
	f.last = ev.Seq
	if ev.Type == jobs.TypeError {
		f.jobErr = &JobError{Code: ev.Code, Message: ev.Message}
	}
	if ev.Type == jobs.TypeDone && ev.Status != "ok" && f.jobErr == nil {
		f.jobErr = &JobError{Code: jobs.CodeInternal, Message: "job failed"}
	}
	return f.fn(ev)
}

// result is the job's outcome once its done event came.
func (f *follower) result() error {
	if f.jobErr != nil {
		return f.jobErr
	}
	return nil
}

// Follow streams a job's events to fn until done. It reconnects with
// Last-Event-ID when the stream breaks. The returned error is a *JobError
// when the job failed.
func (c *Client) Follow(ctx context.Context, id string, fn func(jobs.Event) error) error {
	return c.follow(ctx, id, &follower{fn: fn})
}

func (c *Client) follow(ctx context.Context, id string, f *follower) error {
	for attempt := 0; ; attempt++ {
		done, err := c.followOnce(ctx, id, f)
		if done {
			if err != nil {
				return err
			}
			return f.result()
		}
		if err != nil && (ctx.Err() != nil || attempt >= reconnects || errors.Is(err, ErrAPI)) {
			var ue *url.Error
			if ctx.Err() == nil && errors.As(err, &ue) {
				// The node went away (stopped, killed, restarted on
				// another port): say so, not the bare transport error.
				return fmt.Errorf("lost the node at %s while following job %s: %w (the job may have ended with it; is `rbee node` running?)", c.Base, id, ue.Err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}

func (c *Client) followOnce(ctx context.Context, id string, f *follower) (bool, error) {
	if err := CheckURL(c.Base); err != nil {
		return true, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/v1/jobs/"+id+"/events", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", sse.ContentType)
	if f.last > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(f.last, 10))
	}
	if err := c.authorize(req); err != nil {
		return false, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, decodeAPIError(resp.StatusCode, data)
	}
	return readEvents(resp.Body, f)
}

// readEvents passes the events of an SSE body to f until the done event
// (true) or the end of the stream (false, io.ErrUnexpectedEOF).
func readEvents(body io.Reader, f *follower) (bool, error) {
	sr := sse.NewReader(body, maxSSELine)
	for {
		se, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return false, io.ErrUnexpectedEOF
		}
		if err != nil {
			return false, err
		}
		if len(se.Data) == 0 {
			continue
		}
		var ev jobs.Event
		if err := json.Unmarshal(se.Data, &ev); err != nil {
			return false, fmt.Errorf("bad event from node: %w", err)
		}
		if err := f.event(ev); err != nil {
			return true, err
		}
		if ev.Type == jobs.TypeDone {
			return true, nil
		}
	}
}

// Run submits a job and follows it. The node streams the job's events in
// its answer to the submit, one round trip (a node that answers 202
// instead, an older one, is followed at the events URL); a stream that
// breaks is followed on from its last event.
func (c *Client) Run(ctx context.Context, req any, fn func(jobs.Event) error) error {
	f := &follower{fn: fn}
	id, done, err := c.submitFollow(ctx, req, f)
	switch {
	case id == "":
		return err
	case done && err != nil:
		return err
	case done:
		return f.result()
	}
	err = c.follow(ctx, id, f)
	if ctx.Err() != nil {
		// The user went away (Ctrl-C), or the command's time limit
		// passed: cancel the job on the node too.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		cerr := c.Cancel(cctx, id)
		cancel()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && err != nil && !errors.Is(err, ErrJobFailed) {
			// Not the transport's "Get …/events: context deadline
			// exceeded": the job is what did not end in time.
			what := "it was cancelled"
			if cerr != nil {
				what = "cancelling it failed too (" + cerr.Error() + ")"
			}
			return fmt.Errorf("job %s on %s did not end within this command's time limit: %w; %s (`rbee status` on the node shows whether it has a leader and its registry is current)", id, c.Base, ctx.Err(), what)
		}
	}
	return err
}

// submitFollow posts the job asking for its events and reads them as
// they stream. It returns the job's id ("" when the job was not
// submitted: err says why) and whether its done event came.
func (c *Client) submitFollow(ctx context.Context, job any, f *follower) (id string, done bool, err error) {
	body, err := jobBody(job)
	if err != nil {
		return "", false, err
	}
	if err := c.checkOlderNode(ctx, body); err != nil {
		return "", false, err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return "", false, err
	}
	if err := CheckURL(c.Base); err != nil {
		return "", false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+"/v1/jobs", bytes.NewReader(b))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", sse.ContentType+", application/json")
	if err := c.authorize(req); err != nil {
		return "", false, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", false, reachError(c.Base, err)
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), sse.ContentType) {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxSSELine))
		if err != nil {
			return "", false, err
		}
		if resp.StatusCode/100 != 2 {
			return "", false, decodeAPIError(resp.StatusCode, data)
		}
		var out struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(data, &out); err != nil || out.JobID == "" {
			return "", false, fmt.Errorf("%w: the submit's answer has no job id", ErrAPI)
		}
		return out.JobID, false, nil
	}
	id = resp.Header.Get(api.JobIDHeader)
	if id == "" {
		return "", false, fmt.Errorf("%w: an event stream without a job id", ErrAPI)
	}
	done, err = readEvents(resp.Body, f)
	return id, done, err
}

// Result runs a job and decodes its (last) result event into out.
func (c *Client) Result(ctx context.Context, req any, out any, onEvent func(jobs.Event)) error {
	var result json.RawMessage
	err := c.Run(ctx, req, func(ev jobs.Event) error {
		if ev.Type == jobs.TypeResult {
			result = ev.Result
		}
		if onEvent != nil {
			onEvent(ev)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if out != nil && result != nil {
		return json.Unmarshal(result, out)
	}
	return nil
}

// Join asks the node to join addrs.
func (c *Client) Join(ctx context.Context, addrs []string) (int, error) {
	var out struct {
		Joined int `json:"joined"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/join", map[string]any{"addrs": addrs}, &out)
	return out.Joined, err
}

// Leave asks the node to leave the cluster and shut down.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/leave", nil, nil)
}

// DataDir asks a node on this machine for its data dir ("" if it does not
// say).
func (c *Client) DataDir(ctx context.Context) (string, error) {
	var out struct {
		DataDir string `json:"data_dir"`
	}
	err := c.do(ctx, http.MethodGet, "/health", nil, &out)
	return out.DataDir, err
}

// Health checks /health.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/health", nil, nil)
}

// CA fetches the cluster CA certificate the node serves (public).
//
// The answer is checked, not believed: it must be one CA certificate, its
// fingerprint and validity are read from the certificate itself, and with
// pin (a --ca-fingerprint, "" for none) it must be that CA, whatever
// the connection was (plain HTTP can be altered on the way). Errors for a
// certificate that is not the pinned one wrap tlsca.ErrWrongCA.
func (c *Client) CA(ctx context.Context, pin string) (api.CAInfo, error) {
	var out api.CAInfo
	if err := c.do(ctx, http.MethodGet, "/v1/tls/ca", nil, &out); err != nil {
		return out, err
	}
	cert, err := tlsca.ParseCACertPEM([]byte(out.CertPEM))
	if err != nil {
		return api.CAInfo{}, fmt.Errorf("the node at %s answered no usable CA certificate: %w", c.Base, err)
	}
	got := tlsca.Fingerprint(cert)
	if pin != "" {
		want, err := tlsca.ParseFingerprint(pin)
		if err != nil {
			return api.CAInfo{}, err
		}
		if got != tlsca.FormatFingerprint(want) {
			return api.CAInfo{}, fmt.Errorf("%w: the node at %s answered the CA %s, not the pinned %s; check --ca-fingerprint, or that you reach the node you mean",
				tlsca.ErrWrongCA, c.Base, got, tlsca.FormatFingerprint(want))
		}
	}
	return api.CAInfo{CertPEM: string(tlsca.EncodeCertPEM(cert)), Fingerprint: got, NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC()}, nil
}
