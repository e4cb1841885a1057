package catalog

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// maxSumsBytes bounds a SHA256SUMS file: a line per release asset, a few
// dozen assets; 1 MiB is generous and stops a hostile server.
const maxSumsBytes = 1 << 20

// ParseSHA256SUMS parses the output of `sha256sum` (or `shasum -a 256`):
// one "<64 hex digits> <space or *><file name>" per line; blank lines and
// lines starting with '#' are skipped. It returns file name → lowercase
// hex digest. A malformed line, a name given twice with different digests,
// or a file over 1 MiB is an error wrapping ErrBadName. Errors name the
// line number only: the file comes from a server and is never quoted.
func ParseSHA256SUMS(data []byte) (map[string]string, error) {
	if len(data) > maxSumsBytes {
		return nil, fmt.Errorf("%w: SHA256SUMS larger than %d bytes", ErrBadName, maxSumsBytes)
	}
	sums := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), maxSumsBytes)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// "<hash>  <name>" (text mode) or "<hash> *<name>" (binary mode).
		if len(line) < 66 || line[64] != ' ' || (line[65] != ' ' && line[65] != '*') {
			return nil, fmt.Errorf("%w: SHA256SUMS line %d: want \"<sha256> <name>\"", ErrBadName, n)
		}
		sum, name := strings.ToLower(line[:64]), line[66:]
		if !isHexSHA256(sum) {
			return nil, fmt.Errorf("%w: SHA256SUMS line %d: the digest is not 64 hex digits", ErrBadName, n)
		}
		name = strings.TrimPrefix(name, "./")
		if name == "" {
			return nil, fmt.Errorf("%w: SHA256SUMS line %d: empty file name", ErrBadName, n)
		}
		if old, ok := sums[name]; ok && old != sum {
			return nil, fmt.Errorf("%w: SHA256SUMS line %d: a file listed twice with different sums", ErrBadName, n)
		}
		sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: SHA256SUMS: %w", ErrBadName, err)
	}
	return sums, nil
}
