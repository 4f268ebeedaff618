package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

const (
	newKeyLen = 32
	maxKeyLen = 4096
)

// LoadKey reads the cluster key that signs checkpoint manifests from path.
// If the file does not exist it creates it: 32 random bytes, mode 0600, owned
// by root, in a parent directory created with mode 0700 if missing. It
// refuses a key file that group or others may access, or that root does not
// own, naming the file and the fix. Every node of a cluster must use the same
// key file.
func LoadKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("cluster key: no key file path given")
	}
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := createKey(path); err != nil {
		return nil, err
	}
	return readKey(path)
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("cluster key %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cluster key %s is not a regular file (%s): replace it with a file of random bytes (mode 0600, owned by root)", path, typeName(fi.Mode()))
	}
	euid := os.Geteuid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != euid {
		owner := "root"
		if euid != 0 {
			owner = fmt.Sprintf("uid %d", euid)
		}
		return nil, fmt.Errorf("cluster key %s is owned by uid %d, not %s: whoever owns it can forge checkpoints; fix with: chown root:root %s && chmod 600 %s",
			path, st.Uid, owner, path, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("cluster key %s is accessible by group or others (mode %#o): anyone who reads it can forge checkpoints; fix with: chmod 600 %s",
			path, perm, path)
	}
	key, err := io.ReadAll(io.LimitReader(f, maxKeyLen+1))
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: %w", path, err)
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, fmt.Errorf("cluster key %s holds %d bytes, need %d to %d: replace it with %d random bytes (head -c %d /dev/urandom > %s), which invalidates existing checkpoints",
			path, len(key), minKeyLen, maxKeyLen, newKeyLen, newKeyLen, path)
	}
	return key, nil
}

// createKey writes a new random key to path without ever replacing an
// existing file (a concurrent creator wins; its key is then read).
func createKey(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("cluster key %s: create directory: %w", path, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("cluster key %s: %w", path, err)
		}
	}
	key := make([]byte, newKeyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("cluster key %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".cruz-key-*") // mode 0600
	if err != nil {
		return fmt.Errorf("cluster key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cluster key %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cluster key %s: %w", path, err)
	}
	return syncDir(dir)
}
