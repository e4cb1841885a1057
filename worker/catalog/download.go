package catalog

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
)

const (
	// SumsFile is the checksum file in every release folder.
	SumsFile = "SHA256SUMS"
	// LatestFile, at the release base, holds the newest version's name; it
	// is read when DownloadOptions.Version is empty.
	LatestFile = "LATEST"
	// maxLatestBytes bounds LatestFile (one version name).
	maxLatestBytes = 256
)

// AssetName is the release file name of a type's binary for goos/goarch:
// "{binary}-{os}-{arch}", plus ".exe" on Windows.
func AssetName(t WorkerType, goos, goarch string) string {
	name := t.Binary + "-" + goos + "-" + goarch
	if goos == "windows" {
		name += ".exe"
	}
	return name
}

// DownloadOptions says which binary to download from a release location.
type DownloadOptions struct {
	// Type is the worker type; "" means TypeCPU.
	Type string
	// Version is the release folder; "" means the one named by
	// {base}/LATEST.
	Version string
	// OS and Arch default to this machine's.
	OS, Arch string
	// BaseURL is the release location; "" means Config.ReleaseBaseURL.
	// Layout: {base}/{version}/{asset} and {base}/{version}/SHA256SUMS,
	// where asset is AssetName (e.g. rbee-worker-linux-amd64).
	BaseURL string
	// Progress, when set, is called as bytes arrive (total is -1 when the
	// server sends no length).
	Progress func(done, total int64)
}

// Download fetches a worker binary from a release location, verifies it
// against the folder's SHA256SUMS and adds it with SourceDownloaded. The
// binary streams into a temp file in the catalog (see AddReader); on a
// checksum mismatch, an HTTP error or a cancelled ctx nothing is added.
func (c *Catalog) Download(ctx context.Context, opts DownloadOptions) (Entry, error) {
	if opts.Type == "" {
		opts.Type = TypeCPU
	}
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	base := opts.BaseURL
	if base == "" {
		base = c.base
	}
	if base == "" {
		return Entry{}, fmt.Errorf("%w: no release base URL configured", ErrDownload)
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return Entry{}, fmt.Errorf("%w: release base URL %q is not http(s)", ErrBadName, base)
	}
	base = strings.TrimRight(base, "/")
	t, err := c.Type(opts.Type)
	if err != nil {
		return Entry{}, err
	}
	if opts.Version == "" {
		b, err := c.fetchSmall(ctx, base+"/"+LatestFile, maxLatestBytes)
		if err != nil {
			return Entry{}, err
		}
		opts.Version = strings.TrimSpace(string(b))
	}
	if err := validNames(t.Name, opts.Version, opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	folder := base + "/" + opts.Version + "/"
	asset := AssetName(t, opts.OS, opts.Arch)

	sumsData, err := c.fetchSmall(ctx, folder+SumsFile, maxSumsBytes)
	if err != nil {
		return Entry{}, err
	}
	sums, err := ParseSHA256SUMS(sumsData)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %s: %w", ErrDownload, folder+SumsFile, err)
	}
	want, ok := sums[asset]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %s lists no %s", ErrDownload, folder+SumsFile, asset)
	}

	resp, err := c.get(ctx, folder+asset)
	if err != nil {
		return Entry{}, err
	}
	defer resp.Body.Close()
	return c.AddReader(ctx, AddOptions{
		Type: t.Name, Version: opts.Version, OS: opts.OS, Arch: opts.Arch,
		Source: SourceDownloaded, SHA256: want, Size: resp.ContentLength, Progress: opts.Progress,
	}, resp.Body)
}

// get issues a GET and turns any status but 200 into an ErrDownload.
func (c *Catalog) get(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: GET %s: %s", ErrDownload, url, resp.Status)
	}
	return resp, nil
}

// fetchSmall GETs a small file, refusing more than max bytes.
func (c *Catalog) fetchSmall(ctx context.Context, url string, max int64) ([]byte, error) {
	resp, err := c.get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %v", ErrDownload, url, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: GET %s: larger than %d bytes", ErrDownload, url, max)
	}
	return b, nil
}

// PeerSource is a node that already has a binary: the node implements it
// over libp2p (the serving side answers with Catalog.Open). Open returns
// the content, its size and its hex sha256 as the peer's catalog records
// them; the caller closes the reader.
type PeerSource interface {
	Open(ctx context.Context, typ, version, goos, goarch string) (rc io.ReadCloser, size int64, sha256 string, err error)
}

// PeerOptions says which binary to copy from a peer. Version is required
// (ask the peer for its list first); OS and Arch default to this machine's.
type PeerOptions struct {
	Type     string
	Version  string
	OS, Arch string
	Progress func(done, total int64)
}

// FetchFromPeer copies a binary from a peer and adds it with SourcePeer,
// verified against the size and sha256 the peer announced, exactly as
// Download does: on a mismatch nothing is added.
func (c *Catalog) FetchFromPeer(ctx context.Context, src PeerSource, opts PeerOptions) (Entry, error) {
	if opts.Type == "" {
		opts.Type = TypeCPU
	}
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if err := validNames(opts.Type, opts.Version, opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	if _, err := c.Type(opts.Type); err != nil {
		return Entry{}, err
	}
	rc, size, sum, err := src.Open(ctx, opts.Type, opts.Version, opts.OS, opts.Arch)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: from peer: %w", ErrDownload, err)
	}
	defer rc.Close()
	if size <= 0 {
		return Entry{}, fmt.Errorf("%w: peer announced size %d", ErrChecksum, size)
	}
	if !isHexSHA256(strings.ToLower(sum)) {
		return Entry{}, fmt.Errorf("%w: peer announced sha256 %q", ErrChecksum, sum)
	}
	return c.AddReader(ctx, AddOptions{
		Type: opts.Type, Version: opts.Version, OS: opts.OS, Arch: opts.Arch,
		Source: SourcePeer, SHA256: sum, Size: size, Progress: opts.Progress,
	}, rc)
}
