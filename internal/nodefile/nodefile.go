// Package nodefile reads where a running node's API is from its data
// dir's node.json. A node writes that file at every start, after its
// listeners are up; the processes it starts and outlives (workers, engine
// guards) read it when the node stops answering at the address they were
// given, and so follow a node restarted on another port (another
// --http-addr, or rbee dev's new ports) instead of going orphan.
package nodefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/rbee-project/rbee/internal/atomicfile"
)

// Env names the environment variable through which a node hands the path
// of its node.json to the processes it starts: an environment variable,
// not a flag, so worker binaries of older versions, which do not know it,
// still start.
const Env = "RBEE_NODE_FILE"

// maxSize bounds what is read: node.json is a few hundred bytes.
const maxSize = 64 << 10

// ErrBad: the file is not a node.json with an http(s) API URL.
var ErrBad = errors.New("nodefile: not a node's node.json")

// APIURL returns the API URL (api_url, e.g. "http://127.0.0.1:7833") of
// the node.json at path. The file must be a regular file (a FIFO would
// block the reader).
func APIURL(path string) (string, error) {
	f, err := atomicfile.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSize {
		return "", fmt.Errorf("%w: %s is over %d bytes", ErrBad, path, maxSize)
	}
	var info struct {
		APIURL string `json:"api_url"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrBad, path, err)
	}
	u, err := url.Parse(info.APIURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: %s: api_url %q is not an http(s) URL", ErrBad, path, info.APIURL)
	}
	return info.APIURL, nil
}
