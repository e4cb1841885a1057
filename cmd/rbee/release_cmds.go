package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/limitread"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// newReleaseCmd is the tooling for signed worker releases: a key pair for
// self-built releases, and the signature of a release folder.
func newReleaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Sign worker releases (for self-built releases: keygen, sign)",
		Long: `A worker release folder holds the binaries (rbee-worker-{os}-{arch}, ...),
SHA256SUMS (sha256sum format) and SHA256SUMS.sig: one line per signature, the
base64 of an ed25519 signature over "rbee-release-v1\n" + VERSION + "\n" +
SHA256SUMS, where VERSION is the folder's name. Nodes install only releases
signed by the built-in rbee release key or a key given with
rbee node --worker-release-key.

  rbee release keygen --out ~/rbee-release.key   # once; prints the public key
  rbee release sign --key ~/rbee-release.key --write-sums dist/v1.2.3
  # serve dist/ as the release location: rbee node --worker-release-url URL --worker-release-key PUBKEY`,
	}
	cmd.AddCommand(newReleaseKeygenCmd(), newReleaseSignCmd())
	return cmd
}

func newReleaseKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Create a release signing key (private key to FILE, mode 0600; prints the public key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out FILE is required")
			}
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			// Published only where no file is: a key is never overwritten
			// by accident, and never left half written.
			f, err := atomicfile.Create(out, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			defer f.Abort()
			if _, err := f.Write(workercat.MarshalPrivateKey(priv)); err != nil {
				return err
			}
			if err := f.CommitNew(); errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("--out %s exists: keygen never overwrites a key (remove it, or pick another file)", out)
			} else if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			w := cmd.OutOrStdout()
			if f := cmd.Flag("output"); f != nil && f.Value.String() == "json" {
				return writeJSON(w, map[string]string{"public_key": workercat.FormatPublicKey(pub), "private_key_file": out})
			}
			fmt.Fprintln(w, workercat.FormatPublicKey(pub))
			fmt.Fprintf(cmd.ErrOrStderr(), "private key written to %s (keep it secret, never commit it)\n"+
				"nodes trust releases it signs with: rbee node --worker-release-key %s\n", out, workercat.FormatPublicKey(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file for the private key (must not exist)")
	localPaths(cmd.Flags(), "out")
	return cmd
}

// maxKeyFile bounds a private key file (comment lines and one key line);
// maxSumsFile is the largest SHA256SUMS a node accepts.
const (
	maxKeyFile  = 64 << 10
	maxSumsFile = 1 << 20
)

// readReleaseFile reads a regular file of at most max bytes: a FIFO, a
// device or a directory (where a read would block, never end, or fail
// obscurely) is refused with atomicfile.ErrNotRegular, a larger file with
// its size limit.
func readReleaseFile(path string, max int64) ([]byte, error) {
	f, err := atomicfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := limitread.All(f, max)
	if errors.Is(err, limitread.ErrTooLarge) {
		return nil, fmt.Errorf("%s is over %d bytes", path, max)
	}
	return b, err
}

func newReleaseSignCmd() *cobra.Command {
	var keyFile, version string
	var writeSums bool
	cmd := &cobra.Command{
		Use:   "sign --key FILE DIR",
		Short: "Sign DIR/SHA256SUMS (DIR is a release folder, named by its version) into DIR/SHA256SUMS.sig",
		Long: `Sign a release folder: writes DIR/SHA256SUMS.sig, the signature of DIR/SHA256SUMS
for the version (DIR's name unless --version says otherwise) with the private
key from FILE. With --write-sums, DIR/SHA256SUMS is first (re)written from the
regular files in DIR (hidden files, SHA256SUMS and SHA256SUMS.sig left out).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return errors.New("--key FILE is required (create one with rbee release keygen --out FILE)")
			}
			dir := args[0]
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return fmt.Errorf("the release folder %s is not a directory: %v", dir, err)
			}
			// The folder is what gets published: a key inside it would be
			// listed in SHA256SUMS, signed and served with the release.
			if absDir, err1 := filepath.Abs(dir); err1 == nil {
				if absKey, err2 := filepath.Abs(keyFile); err2 == nil {
					if rel, err := filepath.Rel(absDir, absKey); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
						return fmt.Errorf("--key %s is inside the release folder %s, which is published: keep the private key elsewhere", keyFile, dir)
					}
				}
			}
			if version == "" {
				abs, err := filepath.Abs(dir)
				if err != nil {
					return err
				}
				version = filepath.Base(abs)
			}
			if err := workercat.ValidName("version", version); err != nil {
				return fmt.Errorf("the release folder's name is its version: %w (or pass --version)", err)
			}
			b, err := readReleaseFile(keyFile, maxKeyFile)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			priv, err := workercat.ParsePrivateKey(b)
			if err != nil {
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			sumsPath := filepath.Join(dir, workercat.SumsFile)
			if writeSums {
				sums, err := workercat.ReleaseSums(dir)
				if err != nil {
					return err
				}
				if err := atomicfile.WriteFile(sumsPath, sums, 0o644); err != nil {
					return err
				}
			}
			sums, err := readReleaseFile(sumsPath, maxSumsFile)
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("%s does not exist (pass --write-sums to create it from the files in %s)", sumsPath, dir)
			}
			if err != nil {
				return err
			}
			sig, err := workercat.SignRelease(priv, version, sums)
			if err != nil {
				return fmt.Errorf("%s: %w", sumsPath, err)
			}
			pub := priv.Public().(ed25519.PublicKey)
			if _, err := workercat.VerifyRelease([]ed25519.PublicKey{pub}, version, sums, sig); err != nil {
				return fmt.Errorf("the new signature does not verify: %w", err)
			}
			sigPath := filepath.Join(dir, workercat.SigFile)
			if err := atomicfile.WriteFile(sigPath, sig, 0o644); err != nil {
				return err
			}
			if f := cmd.Flag("output"); f != nil && f.Value.String() == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"version": version, "sums": sumsPath, "signature": sigPath, "public_key": workercat.FormatPublicKey(pub)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s for version %s with key %s: %s\n", sumsPath, version, workercat.FormatPublicKey(pub), sigPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "private key file (from rbee release keygen)")
	localPaths(cmd.Flags(), "key")
	cmd.Flags().StringVar(&version, "version", "", "release version (default: DIR's name)")
	cmd.Flags().BoolVar(&writeSums, "write-sums", false, "(re)write DIR/SHA256SUMS from the files in DIR first")
	return cmd
}
