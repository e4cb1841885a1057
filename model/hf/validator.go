package hf

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/rbee-project/rbee/internal/atomicfile"
)

// A partial of a source that names its version (an HTTP ETag or
// Last-Modified) keeps that validator beside it (<partial>.validator), and
// a resume sends it as If-Range: a server whose file changed since answers
// with the whole new file (200), and Transfer starts over, instead of
// appending the new file's tail to the old file's head. That matters where
// no sha256 is known to catch the mix at the end (plain https:// URLs).

// ValidatorSuffix names a partial's validator file: the partial's path
// and this (a caller sweeping partials keeps or removes the two together).
const ValidatorSuffix = ".validator"

// maxValidator caps a stored validator: ETags are short; a longer one is
// not kept (the resume then goes without If-Range, as before).
const maxValidator = 512

// validated is a body that says which version of its file it is from.
type validated interface {
	validator() string
}

type validatedBody struct {
	io.ReadCloser
	v string
}

func (b validatedBody) validator() string { return b.v }

// responseValidator is what If-Range may carry for resp (RFC 9110
// 13.1.5): its ETag when that is strong; its Last-Modified only when it
// has no ETag; "" when it has neither, a weak ETag, or one that cannot be
// sent back.
func responseValidator(resp *http.Response) string {
	v := resp.Header.Get("ETag")
	switch {
	case strings.HasPrefix(v, "W/"):
		return ""
	case v == "":
		v = resp.Header.Get("Last-Modified")
	}
	if len(v) > maxValidator || strings.ContainsAny(v, "\r\n\x00") {
		return ""
	}
	return v
}

// otherVersion reports whether resp, a 206 answer to a resume with
// If-Range stored, says it is from another version of the file: it
// carries a validator of the same kind (an entity tag, or a date) that
// differs. A validator of the other kind, or none, says nothing.
func otherVersion(stored string, resp *http.Response) bool {
	if stored == "" {
		return false
	}
	got := resp.Header.Get("Last-Modified")
	if strings.HasPrefix(stored, `"`) {
		got = resp.Header.Get("ETag")
	}
	return got != "" && got != stored
}

type ifRangeKey struct{}

// withIfRange asks the URL opener to send v as If-Range with its Range.
// The other openers ignore it.
func withIfRange(ctx context.Context, v string) context.Context {
	return context.WithValue(ctx, ifRangeKey{}, v)
}

func ifRangeFrom(ctx context.Context) string {
	v, _ := ctx.Value(ifRangeKey{}).(string)
	return v
}

// loadValidator returns the validator kept beside partial, "" if none.
func loadValidator(partial string) string {
	b, err := os.ReadFile(partial + ValidatorSuffix)
	if err != nil || len(b) > maxValidator {
		return ""
	}
	return string(b)
}

// keepValidator records the validator of body (a source read from its
// first byte) beside partial, or removes a stale one when body has none.
func keepValidator(partial string, body io.Reader) error {
	v := ""
	if b, ok := body.(validated); ok {
		v = b.validator()
	}
	if v == "" {
		return dropValidator(partial)
	}
	return atomicfile.WriteFile(partial+ValidatorSuffix, []byte(v), 0o644)
}

// dropValidator removes partial's validator file, if any.
func dropValidator(partial string) error {
	if err := os.Remove(partial + ValidatorSuffix); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
