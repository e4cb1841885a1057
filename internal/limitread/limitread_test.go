package limitread

import (
	"errors"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

func TestAll(t *testing.T) {
	b, err := All(strings.NewReader("12345"), 5)
	require.NoError(t, err)
	require.Equal(t, "12345", string(b))
	_, err = All(strings.NewReader("123456"), 5)
	require.ErrorIs(t, err, ErrTooLarge)
	require.ErrorContains(t, err, "5 bytes")
	boom := errors.New("boom")
	_, err = All(iotest.ErrReader(boom), 5)
	require.ErrorIs(t, err, boom)
	// An endless input is read only past the limit.
	_, err = All(endless{}, 1<<20)
	require.ErrorIs(t, err, ErrTooLarge)
}

type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }
