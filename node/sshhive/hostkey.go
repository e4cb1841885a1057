package sshhive

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rbee-project/rbee/internal/limitread"
)

// hostKeyChecker verifies a server's host key against one known_hosts file.
// It serves one Dial: the handshake goroutine calls callback (again on each
// key re-exchange), Dial reads the outcome with result.
type hostKeyChecker struct {
	file      string
	acceptNew bool
	log       *slog.Logger
	db        ssh.HostKeyCallback // nil while the file does not exist

	mu      sync.Mutex
	checked bool  // the key was verified (or recorded)
	err     error // why the key was refused
}

// result reports whether a key was verified and, if one was refused, why.
func (h *hostKeyChecker) result() (checked bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.checked, h.err
}

func newHostKeyChecker(file string, acceptNew bool, log *slog.Logger) (*hostKeyChecker, error) {
	h := &hostKeyChecker{file: file, acceptNew: acceptNew, log: log}
	db, err := loadKnownHosts(file, log)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%w: known_hosts %s: %v", ErrInvalid, file, err)
	default:
		h.db = db
	}
	return h, nil
}

// maxKnownHostsBytes bounds the known_hosts file read into memory.
const maxKnownHostsBytes = 16 << 20

// loadKnownHosts is knownhosts.New(file), except that lines that do not
// parse (a key type this library does not know, a damaged line) are
// skipped with a warning, as OpenSSH skips them, instead of making every
// host unverifiable. They are blanked in a private temporary copy, so the
// line numbers of the others stay those of file.
func loadKnownHosts(file string, log *slog.Logger) (ssh.HostKeyCallback, error) {
	// Non-blocking: a FIFO would wait for a writer for ever. Devices are
	// read (/dev/null is a common "no known hosts"), within the bound.
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode()&(fs.ModeNamedPipe|fs.ModeSocket|fs.ModeDir) != 0 {
		return nil, fmt.Errorf("not a file (%v)", st.Mode().Type())
	}
	b, err := limitread.All(f, maxKnownHostsBytes)
	if errors.Is(err, limitread.ErrTooLarge) {
		return nil, fmt.Errorf("larger than %d bytes", maxKnownHostsBytes)
	}
	if err != nil {
		return nil, err
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	var bad []int
	for i, l := range lines {
		t := bytes.TrimSpace(l)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		if _, _, _, _, _, err := ssh.ParseKnownHosts(t); err != nil {
			log.Warn("known_hosts line skipped: it does not parse", "file", file, "line", i+1, "err", err)
			lines[i] = []byte("\n")
			bad = append(bad, i+1)
		}
	}
	if len(bad) == 0 {
		return knownhosts.New(file)
	}
	tmp, err := os.CreateTemp("", "rbee-known_hosts-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(bytes.Join(lines, nil))
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, werr
	}
	return knownhosts.New(tmp.Name())
}

func (h *hostKeyChecker) lookup(addr string, remote net.Addr, key ssh.PublicKey) error {
	if h.db == nil {
		return &knownhosts.KeyError{}
	}
	return h.db(addr, remote, key)
}

// algorithmsFor returns the host key algorithms of the keys known for addr,
// so that the server presents a key we can compare (OpenSSH does the same:
// without it a host known by its ed25519 key that offers ecdsa first would
// look like a changed key). nil (the library's default order) when the host
// is unknown.
func (h *hostKeyChecker) algorithmsFor(addr string) []string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(h.lookup(addr, dummyAddr, probe), &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		var add []string
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		default:
			add = []string{t}
		}
		for _, a := range add {
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	return algos
}

var dummyAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 22}

// callback is the ssh.HostKeyCallback: known key → ok; unknown → record it
// with acceptNew, else ErrUnknownHost; different or revoked key →
// ErrHostKeyMismatch, always.
func (h *hostKeyChecker) callback(addr string, remote net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	fp := ssh.FingerprintSHA256(key)
	err := h.lookup(addr, remote, key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case err == nil:
		h.checked = true
		return nil
	case errors.As(err, &re):
		h.err = fmt.Errorf("%w: %s presents %s key %s, which %s:%d marks @revoked", ErrHostKeyMismatch,
			addr, key.Type(), fp, h.file, re.Revoked.Line)
	case errors.As(err, &ke) && len(ke.Want) > 0:
		w := ke.Want[0]
		h.err = fmt.Errorf("%w: %s presents %s key %s but %s:%d records %s key %s; the host was reinstalled or "+
			"the connection is intercepted: if the change is expected, remove that line and connect again",
			ErrHostKeyMismatch, addr, key.Type(), fp, h.file, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key))
	case errors.As(err, &ke):
		if !h.acceptNew {
			h.err = fmt.Errorf("%w: %s presents %s key %s, not recorded in %s; check the fingerprint and retry with --accept-new to record it",
				ErrUnknownHost, addr, key.Type(), fp, h.file)
			break
		}
		if err := appendKnownHost(h.file, addr, key); err != nil {
			h.err = err
			break
		}
		h.log.Info("recorded new host key", "host", addr, "type", key.Type(), "fingerprint", fp, "file", h.file)
		h.checked = true
		return nil
	default:
		h.err = fmt.Errorf("%w: checking %s against %s: %v", ErrHostKeyMismatch, addr, h.file, err)
	}
	return h.err
}

// appendKnownHost adds one line for addr to file, creating the file (0600)
// and its directory (0700) when missing. A single O_APPEND write keeps
// concurrent appenders from interleaving lines.
func appendKnownHost(file, addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("known_hosts: %w", err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		// Make sure the new entry starts on its own line.
		if b, err := readLastByte(file); err == nil && b != '\n' {
			line = "\n" + line
		}
	}
	_, werr := f.WriteString(line)
	if werr == nil {
		// On disk before the key is trusted: a torn line after a power
		// loss would make every later check of the file fail.
		werr = f.Sync()
	}
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("known_hosts: %w", werr)
	}
	if cerr != nil {
		return fmt.Errorf("known_hosts: %w", cerr)
	}
	return nil
}

func readLastByte(file string) (byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, st.Size()-1); err != nil {
		return 0, err
	}
	return b[0], nil
}
