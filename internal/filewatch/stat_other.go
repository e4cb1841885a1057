//go:build !unix

package filewatch

import "os"

func statOf(f *os.File) (stat, error) {
	fi, err := f.Stat()
	if err != nil {
		return stat{}, err
	}
	return stat{size: fi.Size(), mtime: fi.ModTime().UnixNano()}, nil
}
