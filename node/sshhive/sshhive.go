// Package sshhive manages rbee hives over SSH: it imports hosts from an
// OpenSSH client config, connects with host-key verification against
// known_hosts, probes a host (round trip, OS, architecture, installed rbee),
// installs the rbee binary and a service, and starts and stops a node there.
//
// The package never writes to the cluster registry: it returns values
// (fsm.Host entries, results) and the node applies them through Raft. It
// never reads flags or the environment: the caller passes the agent socket,
// the home directory and the known_hosts file.
//
// A *Client is safe for concurrent use by several goroutines (each remote
// command runs in its own SSH session); the package-level functions are
// stateless.
package sshhive

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/limitread"
)

// Errors returned by this package, wrapped with %w and details; test with
// errors.Is.
var (
	// ErrUnknownHost: the host's key is not in known_hosts and AcceptNew
	// was not set. The message carries the key's SHA256 fingerprint.
	ErrUnknownHost = errors.New("sshhive: host key not known")
	// ErrHostKeyMismatch: known_hosts holds a different key for the host
	// (or the key is revoked). Never accepted automatically.
	ErrHostKeyMismatch = errors.New("sshhive: host key mismatch")
	// ErrAuth: the server refused every key offered, or no key was usable.
	ErrAuth = errors.New("sshhive: authentication failed")
	// ErrUnreachable: no SSH server answered at the address (refused,
	// timed out, name not resolved, handshake aborted).
	ErrUnreachable = errors.New("sshhive: host unreachable")
	// ErrRemoteCommand: a remote command exited non-zero; errors.As to
	// *CommandError for the exit status and stderr.
	ErrRemoteCommand = errors.New("sshhive: remote command failed")
	// ErrInvalid: bad input (target, options, config values).
	ErrInvalid = errors.New("sshhive: invalid input")
	// ErrNotInstalled: the host has no rbee service installed by Install.
	ErrNotInstalled = errors.New("sshhive: rbee is not installed there")
	// ErrNotRunning: the remote node is not running (or already exited).
	ErrNotRunning = errors.New("sshhive: rbee node is not running there")
	// ErrTransfer: a copy to the host did not arrive intact (its size or
	// SHA-256 differs from what was sent), or the local file changed while
	// it was copied. Nothing was installed; a retry may succeed.
	ErrTransfer = errors.New("sshhive: copy to the host failed")
	// ErrRemoteFS: a write on the host failed because the remote user may
	// not write there, or its filesystem is full (space or inodes) or
	// read-only.
	ErrRemoteFS = errors.New("sshhive: the host's filesystem refused the write")
	// ErrSFTP: the host's SFTP subsystem is missing, refused, or does not
	// speak SFTP (a login shell that prints text on start breaks it).
	ErrSFTP = errors.New("sshhive: no SFTP on the host")
)

// DefaultPort is the SSH port used when a Target or host has none.
const DefaultPort = 22

// DefaultDialTimeout bounds TCP connect, handshake and authentication: a LAN
// host answers in milliseconds, 10 s leaves room for a slow DNS lookup or a
// loaded machine without letting a dead host stall an operation.
const DefaultDialTimeout = 10 * time.Second

// Output caps: a remote command's stdout is read into memory (the commands
// this package runs print a line or two), stderr is kept for error messages.
const (
	maxStdout = 1 << 20
	maxStderr = 8 << 10
)

// Target says how to reach and authenticate to one host.
type Target struct {
	// Host is the address (name or IP) to connect to. Required.
	Host string
	// Port defaults to 22.
	Port int
	// User is the remote login. Required.
	User string
	// IdentityFiles are private key files tried before the agent's keys.
	// Missing files are skipped; passphrase-protected ones are skipped
	// with a warning (load them into the agent instead).
	IdentityFiles []string
	// KnownHostsFile is the known_hosts file used to verify the host key
	// and, with AcceptNew, to record a new one. Required: there is no
	// insecure mode.
	KnownHostsFile string
	// AcceptNew records the key of a host not yet in KnownHostsFile (like
	// OpenSSH's StrictHostKeyChecking=accept-new). A changed key is always
	// refused.
	AcceptNew bool
	// AgentSocket is the ssh-agent socket (the caller passes SSH_AUTH_SOCK);
	// empty means no agent.
	AgentSocket string
	// Timeout bounds connect + handshake + authentication, and Test's probe
	// command; three times it bounds Install's --version check of the
	// copied binary. 0 means DefaultDialTimeout.
	Timeout time.Duration
	// Logger receives warnings (skipped keys, agent failures); nil discards.
	Logger *slog.Logger
}

// TargetFromHost builds a Target from an inventory entry. The caller adds
// the agent socket, known_hosts file and default identity files it wants.
func TargetFromHost(h fsm.Host, knownHostsFile string) Target {
	t := Target{Host: h.Host, Port: h.Port, User: h.User, KnownHostsFile: knownHostsFile}
	if t.Host == "" {
		t.Host = h.Name
	}
	if h.IdentityFile != "" {
		t.IdentityFiles = []string{h.IdentityFile}
	}
	return t
}

// DefaultIdentityFiles are the private keys OpenSSH tries when a host names
// none, under the local user's home.
func DefaultIdentityFiles(home string) []string {
	var out []string
	for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		out = append(out, filepath.Join(home, ".ssh", n))
	}
	return out
}

// DefaultKnownHostsFile is the local user's known_hosts file.
func DefaultKnownHostsFile(home string) string {
	return filepath.Join(home, ".ssh", "known_hosts")
}

// Addr is host:port as dialed (and as recorded in known_hosts).
func (t Target) Addr() string {
	p := t.Port
	if p == 0 {
		p = DefaultPort
	}
	return net.JoinHostPort(t.Host, strconv.Itoa(p))
}

func (t Target) validate() error {
	switch {
	case t.Host == "":
		return fmt.Errorf("%w: target has no host", ErrInvalid)
	case t.User == "":
		return fmt.Errorf("%w: target %s has no user", ErrInvalid, t.Host)
	case t.Port < 0 || t.Port > 65535:
		return fmt.Errorf("%w: target port %d", ErrInvalid, t.Port)
	case t.KnownHostsFile == "":
		return fmt.Errorf("%w: target %s has no known_hosts file", ErrInvalid, t.Host)
	}
	return nil
}

// CommandError is a remote command that exited non-zero. It matches
// ErrRemoteCommand with errors.Is.
type CommandError struct {
	Command    string
	ExitStatus int    // -1 when the command ended without a status (killed by a signal)
	Stderr     string // the last bytes of stderr, trimmed
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("remote command %q exited with status %d", firstLine(e.Command), e.ExitStatus)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrRemoteCommand) true.
func (e *CommandError) Unwrap() error { return ErrRemoteCommand }

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// Client is an authenticated SSH connection to one host. Close it when done.
type Client struct {
	conn   *ssh.Client
	target Target
	log    *slog.Logger

	mu   sync.Mutex
	home string
	sftp *sftp.Client
}

// Dial connects to t, verifies the host key against t.KnownHostsFile and
// authenticates with t.IdentityFiles and the agent. Errors match
// ErrUnreachable, ErrUnknownHost, ErrHostKeyMismatch, ErrAuth or ErrInvalid.
// ctx cancels the connection attempt; it does not bound the Client's life.
func Dial(ctx context.Context, t Target) (*Client, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	signers, closeAgent, err := loadSigners(t, timeout, log)
	if err != nil {
		return nil, err
	}
	defer closeAgent()

	hk, err := newHostKeyChecker(t.KnownHostsFile, t.AcceptNew, log)
	if err != nil {
		return nil, err
	}
	addr := t.Addr()
	var methods authMethods
	cfg := &ssh.ClientConfig{
		AuthCallback:      methods.record,
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   hk.callback,
		HostKeyAlgorithms: hk.algorithmsFor(addr),
		Timeout:           timeout,
	}

	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh dial %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, addr, err)
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(dctx, func() { _ = nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	stopped := stop()
	if err != nil {
		_ = nc.Close()
		checked, hkErr := hk.result()
		switch {
		case hkErr != nil:
			return nil, hkErr
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh dial %s: %w", addr, ctx.Err())
		case dctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded):
			// The deadline closed the connection: the error is "use of
			// closed network connection" or "i/o timeout", neither of
			// which says what happened.
			stage := "the server's SSH banner and key exchange"
			if checked {
				stage = "authentication"
			}
			return nil, fmt.Errorf("%w: %s accepted the connection but did not complete %s within %v (a stalled or non-SSH server)",
				ErrUnreachable, addr, stage, timeout)
		case checked && isAuthError(err) && len(methods.get()) > 0 && !slices.Contains(methods.get(), "publickey"):
			// The server never offered publickey: no key was even tried.
			return nil, fmt.Errorf("%w: %s@%s does not accept public-key authentication (it offers: %s; rbee uses "+
				"no passwords): enable PubkeyAuthentication there and add your key to the user's authorized_keys",
				ErrAuth, t.User, addr, strings.Join(methods.get(), ", "))
		case checked && isAuthError(err):
			return nil, fmt.Errorf("%w: %s@%s: the server refused the %d key(s) offered: %v", ErrAuth, t.User, addr, len(signers), err)
		case checked:
			return nil, fmt.Errorf("ssh %s: %w", addr, err)
		case strings.Contains(err.Error(), "no common algorithm for host key"):
			return nil, fmt.Errorf("%w: %s offers none of the key types recorded in %s: %v", ErrHostKeyMismatch, addr, t.KnownHostsFile, err)
		default:
			return nil, fmt.Errorf("%w: %s: no SSH handshake: %v", ErrUnreachable, addr, err)
		}
	}
	if !stopped {
		// The deadline fired just as the handshake finished: nc is closed.
		_ = sc.Close()
		return nil, fmt.Errorf("%w: %s: handshake timed out", ErrUnreachable, addr)
	}
	_ = nc.SetDeadline(time.Time{})
	return &Client{conn: ssh.NewClient(sc, chans, reqs), target: t, log: log}, nil
}

// authMethods records the authentication methods the server offers, so a
// failure can say when it takes no public keys at all.
type authMethods struct {
	mu      sync.Mutex
	allowed []string
}

// record is an ssh.ClientConfig.AuthCallback that only records: the
// library then picks the next method from Auth.
func (m *authMethods) record(ctx *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ctx.AllowedMethods != nil {
		m.allowed = ctx.AllowedMethods
	}
	return nil, nil
}

func (m *authMethods) get() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allowed
}

func isAuthError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "unable to authenticate") || strings.Contains(s, "no supported methods remain")
}

// loadSigners returns the identity files' keys followed by the agent's. The
// returned func releases the agent connection (signing happens during the
// handshake, so it stays open until Dial returns).
func loadSigners(t Target, timeout time.Duration, log *slog.Logger) ([]ssh.Signer, func(), error) {
	var signers []ssh.Signer
	var skipped []string
	for _, f := range t.IdentityFiles {
		b, err := readIdentityFile(f)
		switch {
		case errors.Is(err, os.ErrNotExist):
			skipped = append(skipped, f+" (missing)")
			continue
		case err != nil:
			log.Warn("identity file unreadable", "file", f, "err", err)
			skipped = append(skipped, f+" (unreadable: "+err.Error()+")")
			continue
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if errors.As(err, &pm) {
				log.Warn("identity file is passphrase-protected; add it to the agent", "file", f)
				skipped = append(skipped, f+" (passphrase-protected: add it to ssh-agent)")
			} else {
				log.Warn("identity file is not a private key", "file", f, "err", err)
				skipped = append(skipped, f+" (not a private key)")
			}
			continue
		}
		signers = append(signers, s)
	}
	closeAgent := func() {}
	if t.AgentSocket != "" {
		conn, err := net.DialTimeout("unix", t.AgentSocket, timeout)
		if err != nil {
			log.Warn("ssh-agent unreachable", "socket", t.AgentSocket, "err", err)
			skipped = append(skipped, "agent (unreachable)")
		} else {
			// An agent that does not answer (a stale forwarded socket, one
			// waiting on a PIN prompt) must not hold the dial for ever:
			// listing and signing share the dial's time bound.
			_ = conn.SetDeadline(time.Now().Add(timeout))
			as, err := agent.NewClient(conn).Signers()
			if err != nil {
				log.Warn("ssh-agent signers", "err", err)
			}
			signers = append(signers, as...)
			closeAgent = func() { _ = conn.Close() }
		}
	}
	if len(signers) == 0 {
		closeAgent()
		return nil, nil, fmt.Errorf("%w: no usable key for %s (tried: %s; agent socket: %q)", ErrAuth, t.Host,
			strings.Join(skipped, ", "), t.AgentSocket)
	}
	return signers, closeAgent, nil
}

// maxIdentityFile bounds an identity file: a private key is a few KiB (an
// 16384-bit RSA key about 12).
const maxIdentityFile = 64 << 10

// readIdentityFile reads a private key file without blocking on a FIFO or a
// device and without reading more than maxIdentityFile: an IdentityFile
// that names the wrong file (a pipe, /dev/zero, a model) must not hang the
// operation or fill memory.
func readIdentityFile(path string) ([]byte, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := limitread.All(f, maxIdentityFile)
	if errors.Is(err, limitread.ErrTooLarge) {
		return nil, fmt.Errorf("larger than %d bytes, not a private key", maxIdentityFile)
	}
	return b, err
}

// timeout is the target's time bound (DefaultDialTimeout when unset).
func (c *Client) timeout() time.Duration {
	if c.target.Timeout > 0 {
		return c.target.Timeout
	}
	return DefaultDialTimeout
}

// Target returns the target the client was dialed with.
func (c *Client) Target() Target { return c.target }

// Close closes the connection and the SFTP session (if any). The
// connection goes first: the SFTP client's Close waits for its reader,
// which a host that stopped answering would hold for ever.
func (c *Client) Close() error {
	c.mu.Lock()
	s := c.sftp
	c.sftp = nil
	c.mu.Unlock()
	err := c.conn.Close()
	if s != nil {
		_ = s.Close()
	}
	return err
}

// Run runs the POSIX shell script cmd with /bin/sh on the host, whatever
// the user's login shell (fish, csh, ...), and returns its stdout. The
// script travels on sh's stdin wrapped in a { } group, so sh reads all of it
// before running any, and the group's stdin is /dev/null. Whatever the login
// shell printed before sh started (a .bashrc that echoes a greeting) is not
// part of the returned stdout: sh prints a random marker line first, and
// only what follows it is returned. A non-zero exit is a *CommandError
// (ErrRemoteCommand). Cancelling ctx kills the remote command and returns
// ctx's error.
func (c *Client) Run(ctx context.Context, cmd string) (string, error) {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	mark := "rbee-output-" + hex.EncodeToString(rnd[:])
	out, err := c.run(ctx, cmd, "/bin/sh -s", strings.NewReader("printf '%s\\n' "+mark+"\n{\n"+cmd+"\n} </dev/null\n"))
	if _, after, ok := strings.Cut(out, mark+"\n"); ok {
		out = after
	}
	return out, err
}

// RunInput runs cmd through the remote user's login shell (as `ssh host
// cmd` does) with stdin fed from in. Prefer Run for scripts: this one's
// syntax is the login shell's.
func (c *Client) RunInput(ctx context.Context, cmd string, in io.Reader) (string, error) {
	return c.run(ctx, cmd, cmd, in)
}

// cancelWait bounds how long a cancelled Run waits for the remote side to
// close the session after the kill signal.
const cancelWait = 2 * time.Second

func (c *Client) run(ctx context.Context, cmd, line string, in io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s, err := c.conn.NewSession()
	if err != nil {
		return "", fmt.Errorf("%w: %s: new session: %v", ErrUnreachable, c.target.Addr(), err)
	}
	defer s.Close()
	var stdout, stderr capBuffer
	stdout.max, stderr.max, stderr.tail = maxStdout, maxStderr, true
	s.Stdout, s.Stderr, s.Stdin = &stdout, &stderr, in
	if err := s.Start(line); err != nil {
		return "", fmt.Errorf("%w: %s: start %q: %v", ErrUnreachable, c.target.Addr(), firstLine(cmd), err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		_ = s.Close()
		// An sshd that cannot signal (no privilege separation) keeps the
		// session until the command ends: do not wait for that. The
		// waiting goroutine ends with the command or the connection.
		select {
		case <-done:
		case <-time.After(cancelWait):
		}
		return stdout.String(), ctx.Err()
	}
	if err != nil {
		var ee *ssh.ExitError
		var em *ssh.ExitMissingError
		switch {
		case errors.As(err, &ee):
			return stdout.String(), &CommandError{Command: cmd, ExitStatus: ee.ExitStatus(), Stderr: strings.TrimSpace(stderr.String())}
		case errors.As(err, &em):
			return stdout.String(), &CommandError{Command: cmd, ExitStatus: -1, Stderr: strings.TrimSpace(stderr.String())}
		}
		return stdout.String(), fmt.Errorf("%w: %s: %q: %v", ErrUnreachable, c.target.Addr(), firstLine(cmd), err)
	}
	return stdout.String(), nil
}

// capBuffer keeps at most max bytes: the first ones, or with tail the last.
type capBuffer struct {
	mu   sync.Mutex // a cancelled Run may read while the session still writes
	b    []byte
	max  int
	tail bool
}

func (w *capBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		if w.tail {
			w.b = append(w.b[:0], w.b[len(w.b)-w.max:]...)
		} else {
			w.b = w.b[:w.max]
		}
	}
	return n, nil
}

func (w *capBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// Home returns the remote user's $HOME (cached).
func (c *Client) Home(ctx context.Context) (string, error) {
	c.mu.Lock()
	h := c.home
	c.mu.Unlock()
	if h != "" {
		return h, nil
	}
	out, err := c.Run(ctx, `printf '%s' "$HOME"`)
	if err != nil {
		return "", err
	}
	h = strings.TrimSpace(out)
	if h == "" || !strings.HasPrefix(h, "/") {
		return "", fmt.Errorf("%w: remote $HOME is %q, not an absolute path", ErrInvalid, h)
	}
	c.mu.Lock()
	c.home = h
	c.mu.Unlock()
	return h, nil
}

// SFTP returns the connection's SFTP client, opening it on first use. It is
// closed by Close.
func (c *Client) SFTP() (*sftp.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != nil {
		return c.sftp, nil
	}
	s, err := sftp.NewClient(c.conn)
	if err != nil {
		if strings.Contains(err.Error(), "packet too long") {
			// What OpenSSH's sftp calls "Received message too long":
			// text before the protocol's first packet.
			return nil, fmt.Errorf("%w: %s: the sftp subsystem answered with text, not SFTP (%v): the login shell "+
				"prints on start for non-interactive sessions (~/.bashrc, ~/.profile); make it print only when interactive",
				ErrSFTP, c.target.Addr(), err)
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrSFTP, c.target.Addr(), err)
	}
	c.sftp = s
	return s, nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
