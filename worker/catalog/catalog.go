// Package catalog keeps the worker binaries of one hive: which worker types
// exist (the type registry), which binaries of them are installed (type,
// version, OS/arch, size, sha256, where they came from), and the three ways
// a binary arrives — built from Go source, downloaded from a release folder
// over HTTP, or copied from a peer — all of them verified and installed
// atomically. See DESIGN.md.
package catalog

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/limitread"
	"github.com/rbee-project/rbee/internal/minrate"
	"github.com/rbee-project/rbee/internal/redirectguard"
)

// Sentinel errors. Errors returned by this package wrap them with %w.
var (
	// ErrBadName reports a type, version, OS, arch or binary name that is
	// not a safe path component, or another malformed argument (its text
	// says "invalid argument": the wrapping message says which).
	ErrBadName = errors.New("catalog: invalid argument")
	// ErrUnknownType reports a worker type that is not in the registry.
	ErrUnknownType = errors.New("catalog: unknown worker type")
	// ErrNotFound reports that no catalog entry matches, or that the
	// release location has no such version or file (HTTP 404).
	ErrNotFound = errors.New("catalog: no such worker binary")
	// ErrInUse reports that Delete (or a Register replacing the record with
	// another file) was refused because a running process uses the binary
	// (Config.InUse said so).
	ErrInUse = errors.New("catalog: worker binary in use")
	// ErrChecksum reports a binary whose sha256 or size does not match
	// what its source promised, or that the signed SHA256SUMS of its
	// release does not list; nothing was installed.
	ErrChecksum = errors.New("catalog: checksum mismatch")
	// ErrUnsigned reports a binary that comes without a release signature
	// (a release folder without SHA256SUMS.sig, or a peer's binary that was
	// built or added locally there); nothing was installed.
	ErrUnsigned = errors.New("catalog: not a signed release")
	// ErrSignature reports a release signature that is malformed or that
	// no trusted key verifies; nothing was installed.
	ErrSignature = errors.New("catalog: release signature does not verify")
	// ErrBadKey reports a malformed release key.
	ErrBadKey = errors.New("catalog: invalid release key")
	// ErrTooLarge reports a binary over Config.MaxBinarySize.
	ErrTooLarge = errors.New("catalog: binary too large")
	// ErrNotBuildable reports a type that has no Go source to build from.
	ErrNotBuildable = errors.New("catalog: worker type cannot be built from source")
	// ErrBuild reports a failed build; the error text carries the
	// compiler's output.
	ErrBuild = errors.New("catalog: build failed")
	// ErrNotExecutable reports an engine path that is not absolute, or not
	// an existing regular file with an execute bit (Register).
	ErrNotExecutable = errors.New("catalog: not an executable file")
	// ErrDownload reports a failed download (no release location, an HTTP
	// status, the network, a server that stalled or broke off, a
	// malformed LATEST, a peer that failed). Its text never includes bytes
	// of a remote answer.
	ErrDownload = errors.New("catalog: download failed")
)

// Source says how a binary came into the catalog.
type Source string

// Sources.
const (
	SourceBuilt      Source = "built"
	SourceDownloaded Source = "downloaded"
	SourcePeer       Source = "peer"
	// SourceAdded is a file handed to Add by the caller.
	SourceAdded Source = "added"
	// SourceRegistered is an engine the user installed, registered where
	// it is (Register): the catalog records its path and never copies,
	// moves or deletes the file.
	SourceRegistered Source = "registered"
)

const (
	// DefaultMaxBinarySize bounds one binary. rbee-worker is ~10 MiB; a
	// llama-server with GPU kernels can reach a few hundred MiB. 2 GiB is
	// far above both and still stops a runaway peer or server.
	DefaultMaxBinarySize = 2 << 30
	// indexFile is the catalog's index inside Config.Dir.
	indexFile = "index.json"
	// indexFormat is bumped when the index layout changes incompatibly.
	indexFormat = 1
	// tmpPrefix marks temp files (atomicfile's, and build directories);
	// leftovers of a crash are removed by New.
	tmpPrefix = atomicfile.TempPrefix
)

// Entry is one installed worker binary.
type Entry struct {
	Type    string `json:"type"`
	Version string `json:"version"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	// Binary is the executable's file name.
	Binary string `json:"binary"`
	// Path is the absolute path of the executable. It is derived from the
	// names above and Config.Dir, never read from the index — except for a
	// registered engine (SourceRegistered), whose file lives where the
	// user installed it and is never removed by the catalog.
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	SHA256 string    `json:"sha256"`
	Source Source    `json:"source"`
	Added  time.Time `json:"added"`
	// Signed is true when the catalog keeps the signed SHA256SUMS of the
	// binary's release next to it (checked with the trusted keys when it
	// arrived and when the catalog opens). Only signed binaries are
	// copied to peers.
	Signed bool `json:"signed,omitempty"`
	// Pinned marks the binary an admin made the default of its type and
	// platform (at most one per type and platform); see Default.
	Pinned bool `json:"pinned,omitempty"`
	// Devices are the devices the binary can drive ("cuda", "rocm",
	// "vulkan", "metal", "cpu"), as given when it was registered; empty
	// means unknown.
	Devices []string `json:"devices,omitempty"`
	// Template and HealthPath describe how to launch a binary of the
	// generic type (see ParseTemplate); HealthPath may also override a
	// known engine's.
	Template   string `json:"template,omitempty"`
	HealthPath string `json:"health_path,omitempty"`
	// Archive is set for an engine installed from an archive release (a
	// type with Archive): the asset's name, kept next to the unpacked
	// tree; Size and SHA256 are the archive's. Exec is the executable's
	// path inside the tree (slash-separated, relative); Path is derived
	// from it.
	Archive string `json:"archive,omitempty"`
	Exec    string `json:"exec,omitempty"`
}

func (e Entry) key() string { return e.Type + "/" + e.Version + "/" + e.OS + "-" + e.Arch }

// Config configures a Catalog. Start from DefaultConfig and override fields.
type Config struct {
	// Dir holds the binaries and the index (the node passes
	// <datadir>/workers). Required; created if missing.
	Dir string
	// Types is the type registry; nil means DefaultTypes().
	Types []WorkerType
	// InUse, when set, is asked by Delete for every entry it would remove
	// and by Register for a record it would point at another file; true
	// refuses with ErrInUse. It is called with the
	// catalog's lock held and must not call back into the Catalog.
	InUse func(Entry) bool
	// MaxBinarySize bounds one binary in bytes.
	MaxBinarySize int64
	// HTTPClient is used by Download; nil means a client without a global
	// timeout (downloads are bounded by ctx, IdleTimeout and MaxBinarySize
	// instead). A Transport that is nil or an *http.Transport is copied
	// with internal/redirectguard's dial check (redirects reach a local or
	// private address only on the release location's own host); a nil
	// CheckRedirect gets the catalog's rule, which includes the guard's.
	HTTPClient *http.Client
	// IdleTimeout fails a download request when the release server sends
	// nothing (no answer, no byte of the body) for this long; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MinBytes and RateWindow: a download request (or a peer copy) whose
	// body brings fewer than MinBytes in a RateWindow fails (a server
	// sending a byte every few seconds never trips IdleTimeout, nor a
	// peer stream's read deadline); 0 means minrate's defaults (64 KiB in
	// 30 s), MinBytes < 0 no minimum.
	MinBytes   int64
	RateWindow time.Duration
	// ReleaseBaseURL is the one release location Download uses (layout:
	// {base}/{version}/{binary}-{os}-{arch}, SHA256SUMS, SHA256SUMS.sig).
	// It comes from the node's configuration only; no per-call URL exists.
	ReleaseBaseURL string
	// ReleaseKeys are ed25519 public keys trusted to sign releases in
	// addition to the built-in ReleasePublicKey (self-built releases).
	ReleaseKeys []ed25519.PublicKey
	// Version is the running rbee's version: a downloaded or peer-copied
	// binary of this version may be the default (see Default).
	Version string
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every optional field set.
func DefaultConfig() Config {
	return Config{
		Types:         DefaultTypes(),
		MaxBinarySize: DefaultMaxBinarySize,
	}
}

// Catalog is the set of worker binaries under one directory. All methods
// are safe for concurrent use; slow work (hashing, copying, building,
// downloading) runs outside the lock, only the final rename and index
// write are serialised.
type Catalog struct {
	dir    string
	types  map[string]WorkerType
	order  []string
	inUse  func(Entry) bool
	max    int64
	client *http.Client
	idle   time.Duration
	minB   int64
	window time.Duration
	base   string
	keys   []ed25519.PublicKey
	ver    string
	log    *slog.Logger

	mu      sync.Mutex
	entries map[string]Entry
}

// New opens (or creates) the catalog in cfg.Dir. Entries of the index
// whose file is missing or has another size are dropped with a warning;
// temp files left by a crash are removed.
func New(cfg Config) (*Catalog, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Config.Dir is required", ErrBadName)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if cfg.Types == nil {
		cfg.Types = DefaultTypes()
	}
	if cfg.MaxBinarySize <= 0 {
		cfg.MaxBinarySize = DefaultMaxBinarySize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	hc := *cfg.HTTPClient
	switch tr := hc.Transport.(type) {
	case nil:
		hc.Transport = redirectguard.Transport(nil)
	case *http.Transport:
		hc.Transport = redirectguard.Transport(tr)
	}
	if hc.CheckRedirect == nil {
		hc.CheckRedirect = checkRedirect
	}
	cfg.HTTPClient = &hc
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinBytes == 0 {
		cfg.MinBytes = minrate.DefaultMinBytes
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = minrate.DefaultWindow
	}
	c := &Catalog{
		dir:     dir,
		types:   make(map[string]WorkerType, len(cfg.Types)),
		inUse:   cfg.InUse,
		max:     cfg.MaxBinarySize,
		client:  cfg.HTTPClient,
		idle:    cfg.IdleTimeout,
		minB:    cfg.MinBytes,
		window:  cfg.RateWindow,
		base:    cfg.ReleaseBaseURL,
		keys:    []ed25519.PublicKey{BuiltinReleaseKey()},
		ver:     cfg.Version,
		log:     cfg.Logger,
		entries: make(map[string]Entry),
	}
	for i, k := range cfg.ReleaseKeys {
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Config.ReleaseKeys[%d] has %d bytes, want %d", ErrBadKey, i, len(k), ed25519.PublicKeySize)
		}
		c.keys = append(c.keys, k)
	}
	for _, t := range cfg.Types {
		if err := t.validate(); err != nil {
			return nil, err
		}
		if _, dup := c.types[t.Name]; dup {
			return nil, fmt.Errorf("%w: type %q registered twice", ErrBadName, t.Name)
		}
		c.types[t.Name] = t
		c.order = append(c.order, t.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// Dir returns the catalog's absolute directory.
func (c *Catalog) Dir() string { return c.dir }

// Types returns the type registry in registration order.
func (c *Catalog) Types() []WorkerType {
	out := make([]WorkerType, 0, len(c.order))
	for _, n := range c.order {
		out = append(out, c.types[n])
	}
	return out
}

// Type returns the registered type called name.
func (c *Catalog) Type(name string) (WorkerType, error) {
	if err := ValidName("type", name); err != nil {
		return WorkerType{}, err
	}
	t, ok := c.types[name]
	if !ok {
		return WorkerType{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownType, name, strings.Join(c.order, ", "))
	}
	return t, nil
}

// List returns every entry, sorted by type, OS/arch, then newest first.
func (c *Catalog) List() []Entry {
	c.mu.Lock()
	out := make([]Entry, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e)
	}
	c.mu.Unlock()
	sortEntries(out)
	return out
}

// sortEntries orders entries by type, OS, architecture, then newest first.
func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.OS != b.OS {
			return a.OS < b.OS
		}
		if a.Arch != b.Arch {
			return a.Arch < b.Arch
		}
		return newer(a, b)
	})
}

// newer orders entries newest first: by time added, then version.
func newer(a, b Entry) bool {
	if !a.Added.Equal(b.Added) {
		return a.Added.After(b.Added)
	}
	return a.Version > b.Version
}

// Get returns the entry of typ for this machine's OS and architecture;
// version "" means the newest one installed.
func (c *Catalog) Get(typ, version string) (Entry, error) {
	return c.Lookup(typ, version, runtime.GOOS, runtime.GOARCH)
}

// Lookup is Get for any OS and architecture (a node serving a peer of
// another platform); version "" means the newest.
func (c *Catalog) Lookup(typ, version, goos, goarch string) (Entry, error) {
	if err := validNames(typ, version, goos, goarch, version == ""); err != nil {
		return Entry{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var best Entry
	found := false
	for _, e := range c.entries {
		if e.Type != typ || e.OS != goos || e.Arch != goarch || (version != "" && e.Version != version) {
			continue
		}
		if !found || newer(e, best) {
			best, found = e, true
		}
	}
	if !found {
		v := version
		if v == "" {
			v = "any version"
		}
		return Entry{}, fmt.Errorf("%w: %s %s %s/%s", ErrNotFound, typ, v, goos, goarch)
	}
	return best, nil
}

// Default returns the binary a spawn without a version uses for typ on
// goos/goarch: the pinned entry if there is one; else the newest of the
// entries that are eligible without a pin — those built or added on this
// node, and releases (downloaded or copied from a peer) whose version is
// Config.Version. A release of another version is never the default by
// merely arriving: an admin pins it (AddOptions.Pin) or a spawn names its
// version. The error wraps ErrNotFound and lists what the catalog has.
func (c *Catalog) Default(typ, goos, goarch string) (Entry, error) {
	if err := validNames(typ, "", goos, goarch, true); err != nil {
		return Entry{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var best, pinned Entry
	found, isPinned := false, false
	var others []string
	for _, e := range c.entries {
		if e.Type != typ || e.OS != goos || e.Arch != goarch {
			continue
		}
		if e.Pinned && (!isPinned || newer(e, pinned)) {
			// One pin per platform; a hand-edited index with more gets
			// the newest, deterministically.
			pinned, isPinned = e, true
		}
		if !c.eligible(e) {
			others = append(others, e.Version+" ("+string(e.Source)+")")
			continue
		}
		if !found || newer(e, best) {
			best, found = e, true
		}
	}
	if isPinned {
		return pinned, nil
	}
	if found {
		return best, nil
	}
	if len(others) == 0 {
		return Entry{}, fmt.Errorf("%w: %s any version %s/%s", ErrNotFound, typ, goos, goarch)
	}
	sort.Strings(others)
	return Entry{}, fmt.Errorf("%w: no default %s binary for %s/%s: the catalog has %s, and a release becomes the default only when its version is this node's (%s) or it is pinned (worker_download with \"default\": true); or name the version",
		ErrNotFound, typ, goos, goarch, strings.Join(others, ", "), orNone(c.ver))
}

// eligible reports whether e may be the default without a pin.
func (c *Catalog) eligible(e Entry) bool {
	switch e.Source {
	case SourceBuilt, SourceAdded, SourceRegistered:
		return true
	}
	return c.ver != "" && e.Version == c.ver
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Open opens the binary of an entry for reading (to serve it to a peer).
// The caller closes the reader.
func (c *Catalog) Open(typ, version, goos, goarch string) (io.ReadCloser, Entry, error) {
	e, err := c.Lookup(typ, version, goos, goarch)
	if err != nil {
		return nil, Entry{}, err
	}
	f, err := os.Open(e.Path)
	if err != nil {
		return nil, Entry{}, fmt.Errorf("catalog: %w", err)
	}
	return f, e, nil
}

// Delete removes every entry of typ (all platforms) with the given
// version, or every version when version is "". If Config.InUse reports
// any of them in use, nothing is removed and the error wraps ErrInUse.
// It returns the removed entries.
func (c *Catalog) Delete(typ, version string) ([]Entry, error) {
	if err := ValidName("type", typ); err != nil {
		return nil, err
	}
	if version != "" {
		if err := ValidName("version", version); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var victims []Entry
	for _, e := range c.entries {
		if e.Type == typ && (version == "" || e.Version == version) {
			victims = append(victims, e)
		}
	}
	if len(victims) == 0 {
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, typ, version)
	}
	if c.inUse != nil {
		for _, e := range victims {
			if c.inUse(e) {
				return nil, fmt.Errorf("%w: %s %s (%s/%s) at %s", ErrInUse, e.Type, e.Version, e.OS, e.Arch, e.Path)
			}
		}
	}
	next := make(map[string]Entry, len(c.entries))
	for k, e := range c.entries {
		next[k] = e
	}
	for _, e := range victims {
		delete(next, e.key())
	}
	if err := c.writeIndex(next); err != nil {
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			return nil, err
		}
		// A full disk: the index cannot be rewritten, and deleting is
		// how a user frees space. The files go first; an entry whose file
		// is gone is dropped when the catalog opens, so a crash (or an
		// index that still cannot be written) lists nothing without its
		// file.
		for _, e := range victims {
			c.removeFiles(e)
		}
		c.entries = next
		if err := c.writeIndex(next); err != nil {
			c.log.Warn("worker binaries removed on a full disk; the index file lists them until the next write (they are dropped when the catalog opens)", "type", typ, "version", version, "err", err)
		}
	} else {
		c.entries = next
		for _, e := range victims {
			c.removeFiles(e)
		}
	}
	sort.Slice(victims, func(i, j int) bool { return victims[i].key() < victims[j].key() })
	return victims, nil
}

// pruneDirs removes empty directories from dir up to (not including) the
// catalog root.
func (c *Catalog) pruneDirs(dir string) {
	for dir != c.dir && strings.HasPrefix(dir, c.dir+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

// AddOptions describes a binary being added.
type AddOptions struct {
	Type    string
	Version string
	// OS and Arch default to this machine's.
	OS, Arch string
	// Source defaults to SourceAdded.
	Source Source
	// SHA256 (hex), when set, must match the content or nothing is added.
	SHA256 string
	// Size, when > 0, must match the content length; a reader that goes
	// past it is cut there (ErrChecksum), not read up to MaxBinarySize.
	Size int64
	// Progress, when set, is called as bytes are copied (total is Size,
	// or -1 when unknown).
	Progress func(done, total int64)
	// Release, when set, is the signed SHA256SUMS of the binary's release:
	// it must verify with a trusted key for Version and list the binary's
	// asset name (AssetName), whose sha256 the content must have (SHA256,
	// if also set, must agree). It is kept next to the binary, and the
	// entry is Signed.
	Release *ReleaseProof
	// Pin makes the entry the default of its type and platform (see
	// Default), unpinning any other. Without it, an entry that replaces one
	// with the same type, version and platform keeps that one's pin.
	Pin bool
	// Accel is the accelerator of an archive type's build ("cpu", "cuda",
	// "rocm", "vulkan", "metal"; "" = cpu): it picks the asset
	// (ArchiveAssets) and becomes the entry's Devices.
	Accel string
	// Asset names the archive (one of ArchiveAssets) when no Release
	// lists it; with a Release it is looked up there when empty.
	Asset string
}

// Add installs the file at src (which is only read) as a catalog entry.
// See AddReader.
func (c *Catalog) Add(ctx context.Context, opts AddOptions, src string) (Entry, error) {
	f, err := os.Open(src)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("%w: %s is not a regular file", ErrBadName, src)
	}
	return c.AddReader(ctx, opts, f)
}

// AddReader installs the content of r as a catalog entry: it is copied
// into a temp file in the entry's directory while hashed, checked against
// opts.SHA256 and opts.Size, fsynced, made executable (0755) and renamed
// into place; then the index is rewritten atomically. On any error the
// catalog is unchanged. An existing entry with the same type, version, OS
// and arch is replaced (a running process keeps its old file).
func (c *Catalog) AddReader(ctx context.Context, opts AddOptions, r io.Reader) (Entry, error) {
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if opts.Source == "" {
		opts.Source = SourceAdded
	}
	if err := validNames(opts.Type, opts.Version, opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	t, err := c.Type(opts.Type)
	if err != nil {
		return Entry{}, err
	}
	want := strings.ToLower(opts.SHA256)
	if want != "" && !isHexSHA256(want) {
		return Entry{}, fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrBadName, opts.SHA256)
	}
	e := Entry{
		Type: opts.Type, Version: opts.Version, OS: opts.OS, Arch: opts.Arch,
		Binary: t.BinaryName(opts.OS), Source: opts.Source,
	}
	asset := AssetName(t, opts.OS, opts.Arch)
	if t.Archive {
		if asset, err = c.archiveAsset(t, &opts); err != nil {
			return Entry{}, err
		}
		e.Archive, e.Devices = asset, []string{opts.Accel}
	}
	if opts.Release != nil {
		signed, err := c.signedSumOf(asset, opts.Version, *opts.Release)
		if err != nil {
			return Entry{}, err
		}
		if want != "" && want != signed {
			return Entry{}, fmt.Errorf("%w: the expected sha256 differs from the signed %s", ErrChecksum, SumsFile)
		}
		want = signed
	}
	if opts.Size > c.max {
		return Entry{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, opts.Size, c.max)
	}
	dir := c.entryDir(e)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	mode := os.FileMode(0o755)
	if t.Archive {
		mode = 0o644
	}
	storedName := e.Binary
	if t.Archive {
		storedName = asset
	}
	tmp, err := atomicfile.Create(filepath.Join(dir, storedName), mode)
	if err != nil {
		c.pruneDirs(dir)
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	installed := false
	var tree string // an archive's unpacked files, until renamed into place
	defer func() {
		if !installed {
			tmp.Abort()
			if tree != "" {
				os.RemoveAll(tree)
			}
			c.pruneDirs(dir)
		}
	}()

	total := opts.Size
	if total <= 0 {
		total = -1
	}
	h := sha256.New()
	// A source that announced its size is cut one byte past it, not at
	// the catalog's limit: an endless body costs no more than the binary.
	limit := c.max
	if opts.Size > 0 {
		limit = opts.Size
	}
	cr := &countingReader{ctx: ctx, r: io.LimitReader(r, limit+1), progress: opts.Progress, total: total}
	n, err := io.Copy(io.MultiWriter(tmp, h), cr)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: copying %s: %w", asset, err)
	}
	if opts.Size > 0 && n > opts.Size {
		return Entry{}, fmt.Errorf("%w: the source sent more than the %d bytes it announced", ErrChecksum, opts.Size)
	}
	if n > c.max {
		return Entry{}, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, c.max)
	}
	if n == 0 {
		return Entry{}, fmt.Errorf("%w: empty binary", ErrChecksum)
	}
	if opts.Size > 0 && n != opts.Size {
		return Entry{}, fmt.Errorf("%w: got %d bytes, want %d", ErrChecksum, n, opts.Size)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		what := "the expected sha256"
		if opts.Release != nil {
			what = "the sha256 in the signed " + SumsFile
		}
		return Entry{}, fmt.Errorf("%w: %s (%d bytes) has sha256 %s, not %s", ErrChecksum, asset, n, sum, what)
	}
	// Sync now, outside c.mu: Commit then has little left to flush.
	if err := tmp.Sync(); err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	if t.Archive {
		// Unpacked only once its sha256 is known good; into a temp dir
		// that replaces the tree in one rename.
		if tree, err = os.MkdirTemp(dir, tmpPrefix+"tree-"); err != nil {
			return Entry{}, fmt.Errorf("catalog: %w", err)
		}
		if err := os.Chmod(tree, 0o755); err != nil {
			return Entry{}, fmt.Errorf("catalog: %w", err)
		}
		if e.Exec, err = unpack(tmp.Name(), asset, tree, e.Binary); err != nil {
			return Entry{}, err
		}
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	e.Path = c.pathOf(e)
	e.Size, e.SHA256, e.Added = n, sum, time.Now().UTC()
	e.Signed = opts.Release != nil

	c.mu.Lock()
	defer c.mu.Unlock()
	next := make(map[string]Entry, len(c.entries)+1)
	for k, v := range c.entries {
		if opts.Pin && v.Type == e.Type && v.OS == e.OS && v.Arch == e.Arch {
			v.Pinned = false
		}
		next[k] = v
	}
	old, had := c.entries[e.key()]
	e.Pinned = opts.Pin || old.Pinned
	next[e.key()] = e
	// A replaced entry's files are kept aside until the new index is
	// written, and put back if it cannot be: the catalog on disk then
	// still matches the index, which still names the old entry.
	var undo replaced
	if had {
		undo = c.keepAside(dir, filepath.Join(dir, storedName))
	}
	// The proof goes in before the binary: a crash in between leaves an
	// unlisted proof, never a listed signed binary without one.
	if opts.Release != nil {
		if err := c.writeProof(dir, *opts.Release); err != nil {
			undo.restore(c, dir)
			return Entry{}, err
		}
	}
	// Rename first: an index that names a file which is not there yet
	// would be worse than a file the index does not name (New ignores it).
	if tree != "" {
		oldTree, err := c.swapTree(dir, tree)
		if err != nil {
			if !had {
				c.removeProof(dir)
			}
			undo.restore(c, dir)
			return Entry{}, err
		}
		if had {
			undo.tree = oldTree
		} else if oldTree != "" {
			os.RemoveAll(oldTree) // a tree no entry listed
		}
		tree = ""
	}
	if err := tmp.Commit(); err != nil {
		if !had {
			c.removeProof(dir)
		}
		undo.restore(c, dir)
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	installed = true
	if opts.Release == nil {
		c.removeProof(dir) // of an entry this one replaces
	}
	if err := c.writeIndex(next); err != nil {
		if !had {
			c.removeFiles(e)
		} else {
			if e.Archive != "" && e.Archive != old.Archive {
				os.Remove(filepath.Join(dir, e.Archive)) // the new format's file
			}
			undo.restore(c, dir)
		}
		return Entry{}, err
	}
	undo.discard()
	if had && old.Archive != "" && old.Archive != e.Archive {
		os.Remove(filepath.Join(dir, old.Archive)) // another format or accelerator
	}
	c.entries = next
	c.log.Info("worker binary added", "type", e.Type, "version", e.Version, "os", e.OS, "arch", e.Arch,
		"size", e.Size, "sha256", e.SHA256, "source", e.Source, "signed", e.Signed, "pinned", e.Pinned, "archive", e.Archive)
	return e, nil
}

// archiveAsset picks the asset name of an archive release: the one
// opts.Asset names, else the first of ArchiveAssets the signed sums list.
// It defaults opts.Accel to "cpu" and checks it.
func (c *Catalog) archiveAsset(t WorkerType, opts *AddOptions) (string, error) {
	if opts.Accel == "" {
		opts.Accel = "cpu"
	}
	if !slices.Contains(knownDevices, opts.Accel) {
		return "", fmt.Errorf("%w: accelerator %q (want one of %s)", ErrBadName, opts.Accel, strings.Join(knownDevices, ", "))
	}
	names := ArchiveAssets(t, opts.OS, opts.Arch, opts.Accel)
	if opts.Asset != "" {
		if !slices.Contains(names, opts.Asset) {
			return "", fmt.Errorf("%w: %s archive %q: want one of %s", ErrBadName, t.Name, opts.Asset, strings.Join(names, ", "))
		}
		return opts.Asset, nil
	}
	if opts.Release == nil {
		return "", fmt.Errorf("%w: name the %s archive (one of %s)", ErrBadName, t.Name, strings.Join(names, ", "))
	}
	sums, err := VerifyRelease(c.keys, opts.Version, opts.Release.Sums, opts.Release.Sig)
	if err != nil {
		return "", err
	}
	for _, n := range names {
		if _, ok := sums[n]; ok {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: the signed %s of %s lists none of %s", ErrNotFound, SumsFile, opts.Version, strings.Join(names, ", "))
}

// swapTree renames an unpacked tree into place as dir/tree. The tree an
// earlier entry left is moved aside, into the returned directory (""
// when there was none), which the caller removes once the new entry is
// in the index, or puts back (replaced.restore). Caller holds c.mu.
func (c *Catalog) swapTree(dir, tree string) (aside string, err error) {
	final := filepath.Join(dir, treeDir)
	var old string
	if _, err := os.Lstat(final); err == nil {
		d, err := os.MkdirTemp(dir, tmpPrefix+"old-")
		if err != nil {
			return "", fmt.Errorf("catalog: %w", err)
		}
		old = filepath.Join(d, treeDir)
		if err := os.Rename(final, old); err != nil {
			os.Remove(d)
			return "", fmt.Errorf("catalog: %w", err)
		}
		aside = d
	}
	if err := os.Rename(tree, final); err != nil {
		if old != "" {
			os.Rename(old, final)
			os.Remove(aside)
		}
		return "", fmt.Errorf("catalog: %w", err)
	}
	return aside, nil
}

// replaced is what an Add that replaces an entry kept of the old one: a
// hard link to its stored file, its release proof, its unpacked tree.
type replaced struct {
	stored, link string // the stored file and the link to its old content ("": none)
	sums, sig    []byte // the old proof (nil: none)
	tree         string // the directory holding the old tree (swapTree)
}

// keepAside links stored (the path the new entry's file is committed to)
// aside and reads the proof of dir. What cannot be kept (a file system
// without hard links) is logged: the replacement goes on, as before.
func (c *Catalog) keepAside(dir, stored string) replaced {
	r := replaced{stored: stored}
	if _, err := os.Lstat(stored); err == nil {
		link := filepath.Join(dir, tmpPrefix+"aside-"+filepath.Base(stored))
		os.Remove(link)
		if err := os.Link(stored, link); err != nil {
			c.log.Warn("cannot keep the replaced binary aside; a failed index write cannot restore it", "path", stored, "err", err)
		} else {
			r.link = link
		}
	}
	r.sums, _ = readBounded(filepath.Join(dir, SumsFile), maxSumsBytes)
	r.sig, _ = readBounded(filepath.Join(dir, SigFile), maxSigBytes)
	return r
}

// restore puts the old entry's files back (after a failed replacement).
func (r *replaced) restore(c *Catalog, dir string) {
	if r.link != "" {
		li, lerr := os.Lstat(r.link)
		si, serr := os.Lstat(r.stored)
		switch {
		case lerr == nil && serr == nil && os.SameFile(li, si):
			// Not replaced yet (the failure came before the commit):
			// renaming a link over itself would leave it.
			os.Remove(r.link)
		default:
			if err := os.Rename(r.link, r.stored); err != nil {
				c.log.Warn("restoring the replaced binary", "path", r.stored, "err", err)
			}
		}
		r.link = ""
	}
	if r.tree != "" {
		final := filepath.Join(dir, treeDir)
		if err := os.RemoveAll(final); err == nil {
			if err := os.Rename(filepath.Join(r.tree, treeDir), final); err != nil {
				c.log.Warn("restoring the replaced engine files", "path", final, "err", err)
			}
		}
		os.RemoveAll(r.tree)
		r.tree = ""
	}
	if r.sums != nil && r.sig != nil {
		if err := c.writeProof(dir, ReleaseProof{Sums: r.sums, Sig: r.sig}); err != nil {
			c.log.Warn("restoring the replaced release proof", "dir", dir, "err", err)
		}
	} else {
		c.removeProof(dir)
	}
}

// discard drops what was kept (the replacement is in the index).
func (r *replaced) discard() {
	if r.link != "" {
		os.Remove(r.link)
	}
	if r.tree != "" {
		os.RemoveAll(r.tree)
	}
}

// removeFiles removes what the catalog stored for e (never a registered
// engine's file) and prunes the empty directories left.
func (c *Catalog) removeFiles(e Entry) {
	if e.Source == SourceRegistered {
		return // the user's file, outside the catalog
	}
	dir := c.entryDir(e)
	if e.Archive != "" {
		if err := os.RemoveAll(filepath.Join(dir, treeDir)); err != nil {
			c.log.Warn("removing engine files", "path", filepath.Join(dir, treeDir), "err", err)
		}
	}
	if err := os.Remove(c.stored(e)); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("removing worker binary", "path", c.stored(e), "err", err)
	}
	c.removeProof(dir)
	c.pruneDirs(dir)
}

// signedSum verifies a release proof for version with the trusted keys
// and returns the signed sha256 of t's asset for goos/goarch.
func (c *Catalog) signedSum(t WorkerType, version, goos, goarch string, p ReleaseProof) (string, error) {
	return c.signedSumOf(AssetName(t, goos, goarch), version, p)
}

// signedSumOf verifies a release proof for version and returns the signed
// sha256 of asset.
func (c *Catalog) signedSumOf(asset, version string, p ReleaseProof) (string, error) {
	sums, err := VerifyRelease(c.keys, version, p.Sums, p.Sig)
	if err != nil {
		return "", err
	}
	sum, ok := sums[asset]
	if !ok {
		return "", fmt.Errorf("%w: the signed %s of %s lists no %s", ErrChecksum, SumsFile, version, asset)
	}
	return sum, nil
}

// writeProof stores a release proof in an entry's directory. Caller holds
// c.mu.
func (c *Catalog) writeProof(dir string, p ReleaseProof) error {
	if err := atomicfile.WriteFile(filepath.Join(dir, SumsFile), p.Sums, 0o644); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, SigFile), p.Sig, 0o644); err != nil {
		os.Remove(filepath.Join(dir, SumsFile))
		return err
	}
	return nil
}

// removeProof removes the release proof from an entry's directory.
func (c *Catalog) removeProof(dir string) {
	for _, name := range []string{SumsFile, SigFile} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("removing release proof", "path", filepath.Join(dir, name), "err", err)
		}
	}
}

// readProof reads the release proof kept with e (bounded like a download).
func (c *Catalog) readProof(e Entry) (ReleaseProof, error) {
	dir := c.entryDir(e)
	sums, err := readBounded(filepath.Join(dir, SumsFile), maxSumsBytes)
	if err != nil {
		return ReleaseProof{}, err
	}
	sig, err := readBounded(filepath.Join(dir, SigFile), maxSigBytes)
	if err != nil {
		return ReleaseProof{}, err
	}
	return ReleaseProof{Sums: sums, Sig: sig}, nil
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	defer f.Close()
	b, err := limitread.All(f, max)
	switch {
	case errors.Is(err, limitread.ErrTooLarge):
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrBadName, path, max)
	case err != nil:
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return b, nil
}

// OpenRelease opens a signed binary to serve it to a peer, with the
// release proof the peer checks it against. An entry that is not signed
// (built or added here) is refused with ErrUnsigned: peers accept only
// signed releases. The caller closes the reader.
func (c *Catalog) OpenRelease(typ, version, goos, goarch string) (io.ReadCloser, Entry, ReleaseProof, error) {
	if version == "" {
		return nil, Entry{}, ReleaseProof{}, fmt.Errorf("%w: a peer copy names its version", ErrBadName)
	}
	e, err := c.Lookup(typ, version, goos, goarch)
	if err != nil {
		return nil, Entry{}, ReleaseProof{}, err
	}
	if !e.Signed {
		return nil, Entry{}, ReleaseProof{}, fmt.Errorf("%w: %s %s (%s/%s) here is %s, not a signed release; only signed releases are copied between nodes",
			ErrUnsigned, e.Type, e.Version, e.OS, e.Arch, e.Source)
	}
	if e.Archive != "" {
		return nil, Entry{}, ReleaseProof{}, fmt.Errorf("%w: %s %s is an engine archive: each hive downloads it from the release location for its own accelerator",
			ErrNotFound, e.Type, e.Version)
	}
	p, err := c.readProof(e)
	if err != nil {
		return nil, Entry{}, ReleaseProof{}, err
	}
	f, err := os.Open(e.Path)
	if err != nil {
		return nil, Entry{}, ReleaseProof{}, fmt.Errorf("catalog: %w", err)
	}
	return f, e, p, nil
}

// pathOf derives an entry's path from its (validated) names.
func (c *Catalog) pathOf(e Entry) string {
	if e.Archive != "" {
		return filepath.Join(c.entryDir(e), treeDir, filepath.FromSlash(e.Exec))
	}
	return filepath.Join(c.entryDir(e), e.Binary)
}

// entryDir is the directory of an entry's files and release proof.
func (c *Catalog) entryDir(e Entry) string {
	return filepath.Join(c.dir, e.Type, e.Version, e.OS+"-"+e.Arch)
}

// stored is the file whose size and sha256 the entry records: the
// archive of an archive entry, else the binary.
func (c *Catalog) stored(e Entry) string {
	if e.Archive != "" {
		return filepath.Join(c.entryDir(e), e.Archive)
	}
	return e.Path
}

func validNames(typ, version, goos, goarch string, versionOptional bool) error {
	if err := ValidName("type", typ); err != nil {
		return err
	}
	if version != "" || !versionOptional {
		if err := ValidName("version", version); err != nil {
			return err
		}
	}
	if err := ValidName("os", goos); err != nil {
		return err
	}
	return ValidName("arch", goarch)
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// countingReader reports progress and stops when ctx is done.
type countingReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	progress func(done, total int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if n > 0 {
		c.done += int64(n)
		if c.progress != nil {
			c.progress(c.done, c.total)
		}
	}
	return n, err
}

type indexDoc struct {
	Format  int     `json:"format"`
	Entries []Entry `json:"entries"`
}

// load reads the index and removes leftover temp files.
func (c *Catalog) load() error {
	_ = filepath.WalkDir(c.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			os.RemoveAll(p)
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	data, err := atomicfile.ReadFile(filepath.Join(c.dir, indexFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	var doc indexDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		path := filepath.Join(c.dir, indexFile)
		return fmt.Errorf("catalog: corrupt index %s: %w; move it away (to %s.bad) and start again: "+
			"the node catalogs its own cpu worker again, and `rbee worker build` or `rbee worker download` adds the others", path, err, path)
	}
	if doc.Format != indexFormat {
		return fmt.Errorf("catalog: index format %d, want %d", doc.Format, indexFormat)
	}
	for _, e := range doc.Entries {
		if err := validNames(e.Type, e.Version, e.OS, e.Arch, false); err != nil {
			c.log.Warn("dropping bad index entry", "err", err)
			continue
		}
		if err := ValidName("binary", e.Binary); err != nil {
			c.log.Warn("dropping bad index entry", "err", err)
			continue
		}
		if e.Source == SourceRegistered {
			// What Register would refuse is refused here too (a
			// hand-edited or older index).
			_, err := c.CheckRegister(RegisterOptions{Type: e.Type, Version: e.Version, Path: e.Path,
				Template: e.Template, HealthPath: e.HealthPath, Devices: e.Devices})
			if err == nil && e.Binary != filepath.Base(e.Path) {
				err = fmt.Errorf("%w: binary %q is not the file %s", ErrBadName, e.Binary, e.Path)
			}
			if err != nil {
				c.log.Warn("dropping registered engine the catalog would not register now", "path", e.Path, "err", err)
				continue
			}
			c.entries[e.key()] = e
			continue
		}
		if err := c.checkArchiveEntry(e); err != nil {
			c.log.Warn("dropping bad index entry", "err", err)
			continue
		}
		e.Path = c.pathOf(e)
		fi, err := os.Stat(c.stored(e))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != e.Size {
			c.log.Warn("dropping index entry whose file is missing or changed", "path", c.stored(e))
			continue
		}
		if e.Archive != "" {
			if err := checkExecutable(e.Path); err != nil {
				c.log.Warn("dropping engine whose unpacked executable is gone", "path", e.Path, "err", err)
				continue
			}
		}
		if e.Signed {
			if err := c.checkProof(e); err != nil {
				// Still usable here; no longer copied to peers.
				c.log.Warn("worker binary's release proof does not verify; treating it as unsigned", "path", e.Path, "err", err)
				e.Signed = false
			}
		}
		c.entries[e.key()] = e
	}
	return nil
}

// checkArchiveEntry checks the archive fields of an index entry: a known
// archive type, an asset name of that type and platform, and an Exec path
// inside the tree named like the type's binary.
func (c *Catalog) checkArchiveEntry(e Entry) error {
	t, ok := c.types[e.Type]
	if !ok || !t.Archive || e.Archive == "" && e.Exec == "" {
		if e.Archive != "" || e.Exec != "" {
			return fmt.Errorf("%w: %s entry with archive fields", ErrBadName, e.Type)
		}
		return nil
	}
	if len(e.Devices) != 1 || !slices.Contains(ArchiveAssets(t, e.OS, e.Arch, e.Devices[0]), e.Archive) {
		return fmt.Errorf("%w: %s archive %q", ErrBadName, e.Type, e.Archive)
	}
	if e.Exec == "" || !filepath.IsLocal(filepath.FromSlash(e.Exec)) || path.Base(e.Exec) != e.Binary {
		return fmt.Errorf("%w: %s executable %q", ErrBadName, e.Type, e.Exec)
	}
	return nil
}

// checkProof verifies the proof kept with a signed entry against the
// trusted keys and the entry's recorded sha256.
func (c *Catalog) checkProof(e Entry) error {
	t, ok := c.types[e.Type]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownType, e.Type)
	}
	p, err := c.readProof(e)
	if err != nil {
		return err
	}
	asset := AssetName(t, e.OS, e.Arch)
	if e.Archive != "" {
		asset = e.Archive
	}
	sum, err := c.signedSumOf(asset, e.Version, p)
	if err != nil {
		return err
	}
	if sum != e.SHA256 {
		return fmt.Errorf("%w: recorded sha256 differs from the signed %s", ErrChecksum, SumsFile)
	}
	return nil
}

// writeIndex writes entries as the index, atomically. Caller holds c.mu.
func (c *Catalog) writeIndex(entries map[string]Entry) error {
	doc := indexDoc{Format: indexFormat, Entries: make([]Entry, 0, len(entries))}
	for _, e := range entries {
		doc.Entries = append(doc.Entries, e)
	}
	sort.Slice(doc.Entries, func(i, j int) bool { return doc.Entries[i].key() < doc.Entries[j].key() })
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(c.dir, indexFile), append(data, '\n'), 0o644)
}
